"""Thresholds for naming a face or calling it unknown, calibrated from the gallery itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .head import SoftmaxHead

#: Threshold pair used until the gallery holds enough faces to calibrate its own.
FALLBACK_SIMILARITY = 0.8
#: With one character there is no softmax: accept this share of its own faces
#: (leave-one-out) and call anything less similar unknown.
SINGLE_CHARACTER_ACCEPT = 0.9
CALIBRATION_FOLDS = 5
CALIBRATION_MAX_VECTORS = 3000


@dataclass
class Thresholds:
    similarity: float
    probability: float
    source: str  # "calibrated", "fallback" or "user"


def calibrate(vectors: np.ndarray, labels: list[str], seed: int = 0) -> Thresholds:
    """Pick the similarity and probability thresholds from the gallery itself.

    Cross-validation: each held-out face is scored once as a known face (accept
    it if the head names it right) and once as a stranger, with its own
    character's softmax column removed and the rest renormalised, which is what
    the softmax would say had that character never been enrolled. The pair of
    thresholds that maximises accepted-right minus accepted-wrong-or-stranger wins.
    """
    classes = list(dict.fromkeys(labels))
    y = np.array([classes.index(label) for label in labels], dtype=np.int64)
    rng = np.random.default_rng(seed)
    if len(y) > CALIBRATION_MAX_VECTORS:  # keep refits quick: calibrate on a sample of the rows
        keep = np.sort(rng.choice(len(y), CALIBRATION_MAX_VECTORS, replace=False))
        vectors, y = vectors[keep], y[keep]
    counts = np.bincount(y, minlength=len(classes))
    if len(classes) == 1:
        if counts[0] < 2:
            return Thresholds(FALLBACK_SIMILARITY, 0.0, "fallback")
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        genuine = sims.max(axis=1)
        return Thresholds(float(np.quantile(genuine, 1.0 - SINGLE_CHARACTER_ACCEPT)), 0.0, "calibrated")
    fold = np.full(len(y), -1)
    for c in np.flatnonzero(counts >= 2):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = np.arange(len(members)) % CALIBRATION_FOLDS
    if (fold < 0).all():
        return Thresholds(FALLBACK_SIMILARITY, 0.0, "fallback")
    positives, negatives = [], []
    for f in np.unique(fold[fold >= 0]):
        train, test = fold != f, fold == f
        train_classes = sorted(set(y[train]))
        head = SoftmaxHead().fit(vectors[train], [classes[c] for c in y[train]])
        columns = [classes.index(n) for n in head.classes]
        probs = head.predict_proba(vectors[test])
        sims = vectors[test] @ vectors[train].T
        nearest = np.full((test.sum(), len(classes)), -1.0)
        for c in train_classes:
            nearest[:, c] = sims[:, y[train] == c].max(axis=1)
        for p, near, truth in zip(probs, nearest, y[test]):
            full = np.zeros(len(classes))
            full[columns] = p
            pred = int(np.argmax(full))
            (positives if pred == truth else negatives).append((full[pred], near[pred]))
            full[truth] = 0.0
            other = int(np.argmax(full))
            negatives.append((full[other] / max(full.sum(), 1e-12), near[other]))
    return _best_pair(np.array(positives).reshape(-1, 2), np.array(negatives).reshape(-1, 2))


def _best_pair(positives: np.ndarray, negatives: np.ndarray) -> Thresholds:
    """The (probability, similarity) thresholds maximising TPR - FPR over a grid of quantiles."""
    if not len(positives):
        return Thresholds(FALLBACK_SIMILARITY, 0.0, "fallback")
    grid = np.linspace(0.0, 0.9, 19)
    p_cands = np.unique(np.concatenate([[0.0], np.quantile(positives[:, 0], grid)]))
    s_cands = np.unique(np.concatenate([[-1.0], np.quantile(positives[:, 1], grid)]))
    best, best_j = (0.0, -1.0), -np.inf
    for pt in p_cands:
        for st in s_cands:
            tpr = np.mean((positives[:, 0] >= pt) & (positives[:, 1] >= st))
            fpr = np.mean((negatives[:, 0] >= pt) & (negatives[:, 1] >= st)) if len(negatives) else 0.0
            if tpr - fpr > best_j:
                best, best_j = (pt, st), tpr - fpr
    return Thresholds(similarity=float(best[1]), probability=float(best[0]), source="calibrated")


