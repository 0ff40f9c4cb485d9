"""Thresholds for naming a face or calling it unknown, calibrated from the gallery itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .head import LEAVE_ONE_OUT_ROWS, SoftmaxHead

#: Threshold pair used until the gallery holds enough faces to calibrate its own.
FALLBACK_SIMILARITY = 0.8
#: With one character there is no softmax: accept this share of its own faces
#: (leave-one-out) and call anything less similar unknown.
SINGLE_CHARACTER_ACCEPT = 0.9
#: What accepting a stranger costs, against what naming a known face right gains.
STRANGER_COST = 0.5
#: The probability threshold rejects at most this share of right-named faces (held
#: out), so a known face is rarely called unknown; measured on real weights, 0.2
#: left 22% of known faces unknown at 20 shots (benchmarks/embedder.py).
MAX_RIGHT_REJECTED = 0.05
#: Share of right-named faces the similarity threshold keeps.
SIMILARITY_KEEP = 0.98


@dataclass
class Thresholds:
    similarity: float
    probability: float
    source: str  # "calibrated", "fallback" or "user"


def calibrate(vectors: np.ndarray, labels: list[str], head: SoftmaxHead | None = None) -> Thresholds:
    """Pick the similarity and probability thresholds from the gallery itself.

    Leave-one-out: each held-out face is scored once as a known face (a gain when
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
        genuine = _nearest_per_class(vectors, y, np.arange(min(len(y), LEAVE_ONE_OUT_ROWS)), 1)[:, 0]
        return Thresholds(float(np.quantile(genuine, 1.0 - SINGLE_CHARACTER_ACCEPT)), 0.0, "calibrated")
    if head is None or head.held_out is None:
        head = SoftmaxHead().fit(vectors, labels)
    rows, probs = head.held_out
    truth = y[rows]
    keep = counts[truth] >= 2  # a face alone in its character has nothing to be near
    rows, probs, truth = rows[keep], probs[keep], truth[keep]
    near = _nearest_per_class(vectors, y, rows, len(classes))
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


def _nearest_per_class(vectors: np.ndarray, y: np.ndarray, rows: np.ndarray, n_classes: int,
                       chunk: int = 1024) -> np.ndarray:
    """(len(rows), n_classes) cosine similarity of each row's vector to the nearest
    other vector of each class (-1 where there is none)."""
    order = np.argsort(y, kind="stable")
    starts = np.searchsorted(y[order], np.arange(n_classes))
    present = np.bincount(y, minlength=n_classes) > 0
    gallery = vectors[order]
    position = np.empty(len(y), np.int64)
    position[order] = np.arange(len(y))
    out = np.full((len(rows), n_classes), -1.0, np.float32)
    for at in range(0, len(rows), chunk):
        part = rows[at:at + chunk]
        sims = vectors[part] @ gallery.T
        sims[np.arange(len(part)), position[part]] = -np.inf  # not itself
        out[at:at + len(part), present] = np.maximum.reduceat(sims, starts[present], axis=1)
    return np.maximum(out, -1.0)


def _best_pair(right: np.ndarray, wrong: np.ndarray, stranger: np.ndarray) -> Thresholds:
    """Thresholds from held-out (probability, similarity) rows of right-named, wrong-named
    and stranger faces.

    The similarity threshold only fences off faces unlike anything enrolled (it keeps
    SIMILARITY_KEEP of the right-named ones): between characters, cosine similarity
    separates known faces from strangers far worse than the softmax does. The
    probability threshold maximises right-named minus wrong-named minus
    STRANGER_COST times accepted strangers.
    """
    if not len(right):
        return Thresholds(FALLBACK_SIMILARITY, 0.0, "fallback")
    similarity = float(np.quantile(right[:, 1], 1.0 - SIMILARITY_KEEP))
    cap = np.quantile(right[:, 0], MAX_RIGHT_REJECTED)
    candidates = np.unique(np.concatenate([[0.0], right[right[:, 0] <= cap, 0]]))

    def accepted(rows):  # how many rows clear each candidate (and the similarity threshold)
        probs = np.sort(rows[rows[:, 1] >= similarity, 0])
        return len(probs) - np.searchsorted(probs, candidates, side="left")

    gain = accepted(right) - accepted(wrong) - STRANGER_COST * accepted(stranger)
    return Thresholds(similarity=similarity, probability=float(candidates[np.argmax(gain)]), source="calibrated")
