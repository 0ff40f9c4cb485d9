"""The softmax head: a closed-form ridge fit to the one-hot labels, softmaxed.

It is refit on every enroll and forget, so it must stay fast at a thousand
characters. Least squares to one-hot targets has an exact solution (no
iterations) and exact leave-one-out predictions for free; those set the
softmax temperature here and the unknown-face thresholds in thresholds.py.
It is also far more accurate than an L2-penalised logistic regression on
untrained backbone vectors, which share one dominant direction and differ in
small ones (faces/holoen20, 20 shots: 66% against 26% top-1).
"""

from __future__ import annotations

import numpy as np

#: Ridge penalty, relative to the mean squared distance of a vector from the
#: gallery mean (so it does not depend on the embedder's scale). Chosen on real
#: weights with the trained projection (benchmarks/embedder.py, since replaced by open_set.py): in its whitened
#: space a firm penalty keeps the head close to the class means, which carry over
#: from a few shots; 0.05 overfit them (20 characters x 20 shots: 76% against 89%).
DEFAULT_PENALTY = 1.0
#: Rows given leave-one-out probabilities (a seeded sample above this): they fit the
#: softmax temperature (a scalar: a sample is plenty) and the thresholds.
LEAVE_ONE_OUT_ROWS = 3000
#: Of those, at most this many fit the temperature.
TEMPERATURE_ROWS = 1000
#: Share of each held-out label spread over all classes when fitting the temperature.
LABEL_SMOOTHING = 0.05


class SoftmaxHead:
    """Linear scores softmaxed; `classes` are the names, in column order."""

    def __init__(self, penalty: float = DEFAULT_PENALTY):
        if penalty <= 0:
            raise ValueError(f"penalty must be > 0, got {penalty}")
        self.penalty = float(penalty)
        self.classes: list[str] = []
        self.coef = np.zeros((0, 0), np.float32)  # (dim, n_classes)
        self.intercept = np.zeros(0, np.float32)
        #: (rows, probabilities) of the last fit: each of those gallery rows' class
        #: probabilities from the head fitted without it. Not saved.
        self.held_out: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, vectors: np.ndarray, labels: list[str]) -> "SoftmaxHead":
        """Fit to the gallery and keep `held_out`."""
        X = np.asarray(vectors, np.float32)
        classes = list(dict.fromkeys(labels))
        if len(classes) < 2:
            raise ValueError("a softmax head needs at least two characters")
        index = {name: c for c, name in enumerate(classes)}
        y = np.array([index[label] for label in labels])
        n, dim, k = len(X), X.shape[1], len(classes)
        rows = np.arange(n)
        if n > LEAVE_ONE_OUT_ROWS:
            rows = np.sort(np.random.default_rng(0).choice(n, LEAVE_ONE_OUT_ROWS, replace=False))
        mean_x = X.mean(axis=0)
        A = X - mean_x
        mean_y = np.bincount(y, minlength=k) / n
        lam = self.penalty * max(float(np.einsum("ij,ij->", A, A)) / n, 1e-12)
        if n <= dim:  # dual form: an n x n system
            Y = np.eye(k)[y] - mean_y  # centred one-hot targets
            inverse = np.linalg.inv(np.asarray(A @ A.T, np.float64) + lam * np.eye(n))
            alpha = inverse @ Y
            W = A.T @ alpha
            # leave-one-out residual e / (1 - H_ii), with the intercept's 1/n in the hat matrix
            # (fitted on centred data, every row's own share of the mean is part of its fit)
            loo = Y[rows] - lam * alpha[rows] / (lam * np.diag(inverse)[rows, None] - 1.0 / n)
        else:  # primal form: a dim x dim system
            lower = np.linalg.cholesky(np.asarray(A.T @ A, np.float64) + lam * np.eye(dim))
            class_sums = np.zeros((k, dim))
            np.add.at(class_sums, y, A)
            W = np.linalg.solve(lower.T, np.linalg.solve(lower, class_sums.T))
            sample = A[rows]
            leverage = (np.linalg.solve(lower, sample.T.astype(np.float64)) ** 2).sum(axis=0) + 1.0 / n
            Y = np.eye(k)[y[rows]] - mean_y
            loo = (sample @ W.astype(np.float32) - leverage[:, None] * Y) / (1.0 - leverage)[:, None]
        loo += mean_y
        loo = loo.astype(np.float32)
        every = -(-len(rows) // TEMPERATURE_ROWS)  # spread over the classes, rows are sorted
        temperature = _temperature(loo[::every], y[rows[::every]])
        self.classes = classes
        self.coef = (temperature * W).astype(np.float32)
        self.intercept = (temperature * (mean_y - mean_x @ W)).astype(np.float32)
        self.held_out = rows, softmax(temperature * loo, axis=1).astype(np.float32)
        return self

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


def softmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def log_softmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = scores - scores.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _golden_minimum(f, low: float, high: float, steps: int = 60) -> float:
    """The minimum of a unimodal f on [low, high], by golden-section search."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def _temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The logit scale minimising the held-out log loss of softmax(scale * scores) against
    lightly smoothed labels: with hard ones, a gallery whose held-out faces are all named
    right would push the scale to its bound and every probability to 1."""
    target = np.full(scores.shape, LABEL_SMOOTHING / scores.shape[1])
    target[np.arange(len(y)), y] += 1.0 - LABEL_SMOOTHING

    def loss(log_t):
        return -(target * log_softmax(np.exp(log_t) * scores, axis=1)).sum(axis=1).mean()

    return float(np.exp(_golden_minimum(loss, -3.0, 6.0)))
