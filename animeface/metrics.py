"""Pure metric code for evaluation: no models, no files, only arrays in and numbers out.

Predictions use None for "unknown". Every function here is small enough to check
by hand; tests/test_metrics.py does so on hand-made tables.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative (ties count half)."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def roc_curve(positives: Sequence[float], negatives: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) as the threshold falls through every score."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.r_[0.0, [(pos >= t).mean() for t in thresholds]]
    fpr = np.r_[0.0, [(neg >= t).mean() for t in thresholds]]
    return fpr, tpr


def encode(values: Sequence, classes: Sequence) -> np.ndarray:
    """Column numbers of values in classes; -1 for None (unknown) or anything not in classes."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(v, -1) for v in values], dtype=np.int64)


def per_class_prf(truth: Sequence, pred: Sequence, classes: Sequence) -> dict:
    """Precision, recall, F1 and support per class. A prediction of None (unknown) or a
    truth outside `classes` (a stranger) counts against whichever class it touches."""
    tp, n_pred, n_true = _counts(encode(truth, classes), encode(pred, classes), len(classes))
    precision = np.divide(tp, n_pred, out=np.zeros(len(classes)), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros(len(classes)), where=n_true > 0)
    f1 = _f1(precision, recall)
    return {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(n_true[i])} for i, c in enumerate(classes)}


def macro_f1(truth: Sequence, pred: Sequence, classes: Sequence) -> float:
    """Unweighted mean of the per-class F1 over `classes` (the known characters)."""
    return macro_f1_codes(encode(truth, classes), encode(pred, classes), len(classes))


def macro_f1_codes(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """macro_f1 on values already encoded as column numbers (fast enough for bootstrapping)."""
    if not n_classes:
        return float("nan")
    tp, n_pred, n_true = _counts(truth, pred, n_classes)
    return float(np.mean(_f1(tp / np.maximum(n_pred, 1), tp / np.maximum(n_true, 1))))


def _counts(truth: np.ndarray, pred: np.ndarray, k: int):
    tp = np.bincount(truth[(truth == pred) & (truth >= 0)], minlength=k).astype(float)
    return tp, np.bincount(pred[pred >= 0], minlength=k).astype(float), \
        np.bincount(truth[truth >= 0], minlength=k).astype(float)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def multilabel_prf(truth_sets: Sequence[set], pred_sets: Sequence[set]) -> dict:
    """Micro-averaged image-level precision, recall and F1 over sets of names per picture."""
    tp = sum(len(t & p) for t, p in zip(truth_sets, pred_sets))
    n_pred = sum(len(p) for p in pred_sets)
    n_true = sum(len(t) for t in truth_sets)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def accuracy_coverage(scores: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Answer only the most confident share of pictures: (coverage, accuracy among those answered).

    Entry i is for answering the i+1 highest-scoring pictures; ties are broken by input order.
    """
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    order = np.argsort(-scores, kind="mergesort")
    answered = np.arange(1, len(scores) + 1)
    return answered / len(scores), np.cumsum(correct[order]) / answered


def bootstrap_samples(statistic: Callable[[np.ndarray], object], groups: Sequence[int],
                      resamples: int = 1000, seed: int = 0) -> list:
    """statistic(indices) on `resamples` bootstrap resamples of the rows.

    Rows are drawn with replacement within each group (one group per random
    split), so every resample keeps each split's size.
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    return [statistic(np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members]))
            for _ in range(resamples)]


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The central `level` share of the values, NaNs dropped; None when nothing is left."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], groups: Sequence[int], resamples: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of statistic(indices), resampling within groups."""
    return percentile_interval(bootstrap_samples(statistic, groups, resamples, seed), level)


#: Bins of the reliability diagram and of the calibration error: equal widths over [0, 1].
RELIABILITY_BINS = 10


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = RELIABILITY_BINS) -> list[dict]:
    """Per confidence bin with any answers: its range, how many, the mean confidence and the share right."""
    conf, right = np.asarray(confidence, float), np.asarray(correct, bool)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "n": int(np.sum(which == b)),
             "confidence": float(conf[which == b].mean()), "accuracy": float(right[which == b].mean())}
            for b in range(bins) if np.any(which == b)]


def calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = RELIABILITY_BINS) -> float:
    """Expected calibration error: the answers' share-weighted gap between mean confidence and
    share right, over equal-width bins; NaN with no answers."""
    rows = reliability(confidence, correct, bins)
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / total) if total else float("nan")
