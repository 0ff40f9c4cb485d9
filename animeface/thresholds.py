"""Thresholds for naming a face or calling it unknown, calibrated from the gallery itself."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .head import LEAVE_ONE_OUT_ROWS, SoftmaxHead

#: Similarity threshold used until the gallery holds enough faces to calibrate its own.
#: With the shipped embedder, two pictures of one character have a cosine above 0.05
#: nine times in ten, and half of all pairs of different characters fall below 0.
FALLBACK_SIMILARITY = 0.0
#: With one character there is no softmax: accept this share of its own faces
#: (leave-one-out) and call anything less similar unknown.
SINGLE_CHARACTER_ACCEPT = 0.9
#: What accepting a stranger costs, against what naming a known face right gains.
STRANGER_COST = 0.5
#: The thresholds refuse at most this share of right-named faces (held out). It sets the
#: trade-off between calling known faces unknown and naming strangers. Measured on real
#: weights (benchmarks/embedder.py; 20 characters x 20 shots / 15 enrolled + 5 strangers):
#: 0.05 left 7.9% of known faces unknown and flagged 58% of strangers; 0.065, 10.0% and 68%;
#: 0.08, 12.0% and 70%. A wrong name files a picture under the wrong character, an unknown
#: one only leaves it for the user, so the knee at 0.065 is kept.
MAX_RIGHT_REJECTED = 0.065
#: Candidate thresholds per score, between refusing none and MAX_RIGHT_REJECTED of the right-named faces.
GRID_STEPS = 21


@dataclass
class Thresholds:
    similarity: float
    probability: float
    source: str  # "calibrated", "fallback" or "user"


def calibrate(vectors: np.ndarray, labels: list[str], head: SoftmaxHead | None = None) -> Thresholds:
    """Pick the similarity and probability thresholds from the gallery itself.

    Leave-one-out: each held-out face is compared with its own character's mean without
    it, and scored once as a known face (a gain when
    the head names it right, a loss when it names it wrong) and once as a stranger,
    with its own character's softmax column removed and the rest renormalised,
    which is what the softmax would say had that character never been enrolled
    (a loss when accepted); _best_pair weighs them.
    The ridge head gives exact leave-one-out probabilities from its fit: pass the
    head just fitted on these vectors to reuse them, else one is fitted here.
    """
    vectors = np.asarray(vectors, np.float32)
    classes = list(dict.fromkeys(labels))
    index = {name: c for c, name in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes))
    if counts.max(initial=0) < 2:
        return Thresholds(FALLBACK_SIMILARITY, 0.0, "fallback")
    if len(classes) == 1:
        genuine = _similarity_per_class(vectors, y, np.arange(min(len(y), LEAVE_ONE_OUT_ROWS)), 1)[:, 0]
        return Thresholds(float(np.quantile(genuine, 1.0 - SINGLE_CHARACTER_ACCEPT)), 0.0, "calibrated")
    if head is None or head.held_out is None:
        head = SoftmaxHead().fit(vectors, labels)
    rows, probs = head.held_out
    truth = y[rows]
    keep = counts[truth] >= 2  # a face alone in its character has nothing to be near
    rows, probs, truth = rows[keep], probs[keep], truth[keep]
    near = _similarity_per_class(vectors, y, rows, len(classes))
    picked = np.arange(len(rows))
    predicted = probs.argmax(axis=1)
    known = np.stack([probs[picked, predicted], near[picked, predicted]], axis=1)
    right = predicted == truth
    stranger_probs = probs.copy()
    stranger_probs[picked, truth] = 0.0
    other = stranger_probs.argmax(axis=1)
    stranger = np.stack([stranger_probs[picked, other] / np.maximum(stranger_probs.sum(axis=1), 1e-12),
                         near[picked, other]], axis=1)
    return _best_pair(known[right], known[~right], stranger)


def _similarity_per_class(vectors: np.ndarray, y: np.ndarray, rows: np.ndarray, n_classes: int) -> np.ndarray:
    """(len(rows), n_classes) cosine similarity of each row's vector to each class's mean
    vector, its own class's mean taken without it (-1 where that leaves nothing)."""
    sums = np.zeros((n_classes, vectors.shape[1]), np.float64)
    np.add.at(sums, y, vectors)
    x = vectors[rows].astype(np.float64)
    dots = x @ sums.T
    norms = np.linalg.norm(sums, axis=1)
    out = dots / np.maximum(norms, 1e-12)
    own = y[rows]
    picked = np.arange(len(rows))
    rest = sums[own] - x  # the own class's sum without this row
    rest_norm = np.linalg.norm(rest, axis=1)
    out[picked, own] = np.where(rest_norm > 1e-9, (x * rest).sum(axis=1) / np.maximum(rest_norm, 1e-12), -1.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _best_pair(right: np.ndarray, wrong: np.ndarray, stranger: np.ndarray) -> Thresholds:
    """Thresholds from held-out (probability, similarity) rows of right-named, wrong-named
    and stranger faces.

    Of the pairs that refuse at most MAX_RIGHT_REJECTED of the right-named faces, the one
    that maximises right-named minus wrong-named minus STRANGER_COST times accepted
    strangers. Both scores count: the softmax tells enrolled characters apart, the
    similarity to a character's mean tells a face of it from one of a stranger.
    A small gallery's lowest similarities are a few extreme values, so the similarity's
    quantiles come from a normal fit (mean and spread), not from its smallest values.
    """
    if not len(right):
        return Thresholds(FALLBACK_SIMILARITY, 0.0, "fallback")
    shares = np.linspace(0.0, MAX_RIGHT_REJECTED, GRID_STEPS)
    probabilities = np.concatenate([[0.0], np.quantile(right[:, 0], shares[1:])])
    mean, spread = float(right[:, 1].mean()), float(right[:, 1].std())
    similarities = np.array([-1.0] + [mean + spread * NormalDist().inv_cdf(q) for q in shares[1:]])

    def accepted(rows):  # (probabilities, similarities): how many rows clear both
        return ((rows[:, 0][:, None, None] >= probabilities[None, :, None])
                & (rows[:, 1][:, None, None] >= similarities[None, None, :])).sum(axis=0)

    gain = accepted(right) - accepted(wrong) - STRANGER_COST * accepted(stranger)
    refused = np.mean(right[:, 0][:, None] < probabilities[None, :], axis=0)[:, None] + shares[None, :]
    gain = np.where(refused <= MAX_RIGHT_REJECTED + 1e-9, gain, -np.inf)
    p, s = np.unravel_index(np.argmax(gain), gain.shape)
    return Thresholds(similarity=float(similarities[s]), probability=float(probabilities[p]), source="calibrated")
