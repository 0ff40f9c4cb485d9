"""The softmax head: multinomial logistic regression over the gallery's vectors.

It is refit on every enroll and forget, so it must stay fast at a thousand
characters: weights start from the class means (the nearest-mean classifier it
refines) or from the previous fit, and L-BFGS needs few steps from there.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

#: L2 penalty on the weights; chosen on faces/holoen20 (see benchmarks/colour_feature.py).
DEFAULT_PENALTY = 1e-3
#: Logit scale of the class-mean starting point: unit vectors have cosines in [-1, 1].
INIT_SCALE = 10.0


class SoftmaxHead:
    """Multinomial logistic regression; `classes` are the names, in column order."""

    def __init__(self, penalty: float = DEFAULT_PENALTY, max_iter: int = 200):
        self.penalty = float(penalty)
        self.max_iter = int(max_iter)
        self.classes: list[str] = []
        self.coef = np.zeros((0, 0), np.float32)  # (dim, n_classes)
        self.intercept = np.zeros(0, np.float32)

    def fit(self, vectors: np.ndarray, labels: list[str], warm_start: "SoftmaxHead | None" = None) -> "SoftmaxHead":
        X = np.asarray(vectors, np.float64)
        classes = list(dict.fromkeys(labels))
        if len(classes) < 2:
            raise ValueError("a softmax head needs at least two characters")
        y = np.array([classes.index(label) for label in labels])
        W0, b0 = self._start(X, y, classes, warm_start)
        n, k = len(X), len(classes)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), y] = 1.0

        def loss_and_grad(theta):
            W, b = theta[:-k].reshape(X.shape[1], k), theta[-k:]
            logits = X @ W + b
            logp = log_softmax(logits, axis=1)
            residual = (np.exp(logp) - onehot) / n
            loss = -(logp * onehot).sum() / n + 0.5 * self.penalty * (W * W).sum()
            grad_w = X.T @ residual + self.penalty * W
            return loss, np.concatenate([grad_w.ravel(), residual.sum(axis=0)])

        theta0 = np.concatenate([W0.ravel(), b0])
        result = minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter})
        self.classes = classes
        self.coef = result.x[:-k].reshape(X.shape[1], k).astype(np.float32)
        self.intercept = result.x[-k:].astype(np.float32)
        return self

    def _start(self, X, y, classes, warm_start):
        means = np.stack([X[y == c].mean(axis=0) for c in range(len(classes))], axis=1)
        W = INIT_SCALE * means
        b = np.zeros(len(classes))
        if warm_start is not None and warm_start.coef.shape[0] == X.shape[1]:
            for c, name in enumerate(classes):
                if name in warm_start.classes:
                    j = warm_start.classes.index(name)
                    W[:, c], b[c] = warm_start.coef[:, j], warm_start.intercept[j]
        return W, b

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """(n, n_classes) probabilities, columns in `classes` order."""
        return softmax(np.asarray(vectors, np.float32) @ self.coef + self.intercept, axis=1)

    def to_arrays(self) -> dict:
        return {"coef": self.coef, "intercept": self.intercept, "classes": np.array(self.classes, dtype=str),
                "penalty": np.array(self.penalty)}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "SoftmaxHead":
        head = cls(penalty=float(arrays["penalty"]))
        head.coef = np.asarray(arrays["coef"], np.float32)
        head.intercept = np.asarray(arrays["intercept"], np.float32)
        head.classes = [str(c) for c in arrays["classes"]]
        return head
