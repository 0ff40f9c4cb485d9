"""Name a face or call it unknown: the probability that its best name is right, calibrated
against faces of characters nobody enrolled.

A face's cosine similarity to each enrolled character's mean is first normalised
against strangers (adaptive score normalisation, as in speaker and face verification):
by how the character's mean resembles its COHORT most similar faces of the
projection's stranger bank, and how the face itself resembles its own. A softmax over
those scores (with the head's log-probabilities) and one "none of them" option gives
each name its probability, so a stranger is never forced onto the enrolled names.
Its three weights are fitted per gallery, by maximum likelihood, on its own faces
held out one at a time (known faces), on each character in turn held out of the
gallery (a stranger) and on the bank (strangers).

A bank character the gallery enrolled (its training folder's name is one of the
gallery's labels) is no stranger to it: its faces leave the bank, and come back only
while that character plays the stranger in calibration, as long as half the bank's
characters stay (gallery_bank).

The decision refuses a chosen share of strangers (`stranger_refusal`, the one knob):
a name is kept when its probability clears that quantile of the probabilities
strangers got in calibration (a normal fit to their log-odds).
"""

from __future__ import annotations

import numbers
import re
import unicodedata
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .head import LEAVE_ONE_OUT_ROWS, SoftmaxHead
from .models import STRANGER_REFUSAL

#: Bank faces each side of a score is normalised by: the most similar ones.
COHORT = 100
#: Calibration weighs strangers as this share of all faces: the prior of "none of them".
STRANGER_SHARE = 0.5
#: (similarity, head log-probability, none) weights of a gallery that cannot fit its own (every
#: character enrolled from one picture, or nothing to call a stranger): the mean of the weights
#: fitted by galleries of 6 held-out characters x 5 shots (5 folds x 20, real weights).
DEFAULT_WEIGHTS = (1.4, 0.0, 2.3)
#: Weights with no stranger bank and nothing to fit on: the raw cosine similarity, even odds at 0
#: (the previous release's rule for such galleries: a name when the similarity is positive).
RAW_WEIGHTS = (DEFAULT_WEIGHTS[0], 0.0, 0.0)
#: A name is never given at less than this probability.
MIN_PROBABILITY = 0.5
#: With nothing to call a stranger (one character, no stranger bank): keep this share of its own faces.
FALLBACK_KEEP = 0.9
#: With nothing at all to calibrate against (one face, no stranger bank): log-odds every name clears.
NAME_EVERY_FACE = -50.0
#: The version of the rule a gallery's stored calibration was fitted by; another one is fitted again.
#: 2: the bank characters a gallery enrolled are left out of its bank.
#: 3: only while MIN_STRANGER_SHARE of them stay; names matched in any word order, with qualifiers.
RULE = 3
#: The share of the stranger bank's characters a gallery's bank keeps at the least (gallery_bank).
MIN_STRANGER_SHARE = 0.5
#: Columns of each row the weights are fitted on: its best-scoring characters (and its own).
FIT_COLUMNS = 20
#: Weights are fitted inside these bounds: a score that falls as similarity rises would be absurd.
WEIGHT_BOUNDS = ((0.0, 20.0), (0.0, 5.0), (-30.0, 30.0))


@dataclass
class Calibration:
    """A gallery's decision rule: the softmax's weights, and the log-odds strangers' best names got."""

    weights: tuple[float, float, float]
    stranger_mean: float
    stranger_spread: float
    source: str  # "calibrated" or "fallback"
    rule: int = RULE

    def threshold(self, refusal: float = STRANGER_REFUSAL) -> float:
        """The probability a name needs to refuse this share of strangers, and never less than even
        odds: a gallery with few faces to calibrate on can put its strangers' threshold far too low."""
        check_refusal(refusal)
        return max(float(_sigmoid(self.stranger_mean + self.stranger_spread * NormalDist().inv_cdf(refusal))),
                   MIN_PROBABILITY)

    def probabilities(self, scores: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
        """(n, K) probability that each enrolled name is right; what is left of each row's 1 is
        "none of them". scores: normalised similarities (-inf: not compared); log_probs: the head's."""
        a, b, none = self.weights
        compared = np.isfinite(scores)
        logits = np.where(compared, a * np.where(compared, scores, 0.0) + b * log_probs, -np.inf)
        top = np.maximum(logits.max(axis=1, initial=-np.inf), none)[:, None]
        weights = np.exp(logits - top)
        return weights / (weights.sum(axis=1, keepdims=True) + np.exp(none - top))


def check_refusal(refusal: float) -> float:
    """The share of strangers to refuse, which must lie strictly between 0 and 1 (ValueError)."""
    if not isinstance(refusal, numbers.Real) or not 0.0 < refusal < 1.0:
        raise ValueError(f"stranger_refusal must be a number between 0 and 1, got {refusal!r}")
    return float(refusal)


def name_key(name: str) -> str:
    """A character's name as a gallery label and a bank's training folder are compared: Unicode
    compatibility forms folded (full-width letters), lower case, a leading catalogue number ("000_")
    and punctuation dropped, the words in alphabetical order (given and family names in either)."""
    words = re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", name).lower())
    if len(words) > 1 and words[0].isdigit():
        words = words[1:]
    return "_".join(sorted(words))


def name_forms(name: str) -> tuple[str, str, frozenset[str]]:
    """What names_match compares of a name: its name_key, the name_key of it without its bracketed
    qualifiers, and the qualifiers' words."""
    name = unicodedata.normalize("NFKC", name)  # full-width brackets too
    qualifier = name_key(" ".join(re.findall(r"\(([^)]*)\)", name)))
    return name_key(name), name_key(re.sub(r"\([^)]*\)", " ", name)), frozenset(qualifier.split("_")) - {""}


def names_match(label: tuple, name: tuple) -> bool:
    """Whether a gallery label names the bank character of this training folder's name (both as
    name_forms gives them): the same name_key, or the same once any bracketed qualifier is set
    aside and qualifiers that agree where both have one (one's words among the other's): "aqua",
    "Aqua KonoSuba" and "Aqua (KonoSuba)" name "aqua_(konosuba)", "aqua (hololive)" does not;
    "Abigail Williams (Fate/Grand Order)" names "abigail_williams_(fate)"."""
    (key, base, qualifier), (bank_key, bank_base, bank_qualifier) = label, name
    if key and key == bank_key:
        return True
    return base != "" and base == bank_base and (qualifier <= bank_qualifier or bank_qualifier <= qualifier)


def gallery_bank(labels, faces: np.ndarray | None, characters: np.ndarray | None,
                 names) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """(strangers, own): the stranger bank as a gallery of these labels sees it.

    A bank character a label names (names_match) is no stranger to the gallery: its faces leave
    `strangers`, and are `own[label]`, given back when that label plays the stranger in
    calibration. The faces alone do not tell it: an enrolled character's mean can lie farther from
    its own bank faces than a lookalike's does (docs/benchmarks.md). A gallery that names more
    than 1 - MIN_STRANGER_SHARE of the bank's characters keeps the whole bank: a bank of a few
    characters stood for strangers so badly that most of them were named.
    """
    if faces is None:
        return None, {}
    bank = [name_forms(name) for name in names]
    own, linked = {}, np.zeros(len(faces), bool)
    for label in dict.fromkeys(labels):
        forms = name_forms(label)
        numbers = [number for number, name in enumerate(bank) if names_match(forms, name)]
        if not numbers:
            continue
        rows = np.isin(characters, numbers)
        if rows.any():
            own[label] = faces[rows]
            linked |= rows
    if len(np.unique(characters[~linked])) < MIN_STRANGER_SHARE * len(np.unique(characters)):
        return faces, {}
    return faces[~linked], own


class Normaliser:
    """Similarities to the enrolled characters' means, normalised against the stranger bank.

    The bank is the gallery's (gallery_bank): leaving out the bank characters who merely looked
    like an enrolled one also left out the lookalikes that make the best cohort, and cost more
    than it gained (docs/benchmarks.md); only those it enrolled are left out.
    """

    def __init__(self, means: np.ndarray, faces: np.ndarray | None):
        """means: the enrolled characters' unit mean vectors; faces: the stranger bank, or None."""
        self.strangers = faces if faces is not None and len(faces) >= 2 else None
        if self.strangers is not None:
            self.class_mean, self.class_spread = _cohort(self.strangers @ means.T, axis=0)

    def __call__(self, similarities: np.ndarray, faces: np.ndarray, bank_rows: np.ndarray | None = None,
                 more: np.ndarray | None = None) -> np.ndarray:
        """Normalised scores of `faces` (n, dim) from their similarities (n, K) to the means; the
        raw similarities when there is no bank. bank_rows: for faces of the bank itself, their
        rows, left out of their own cohort. more: faces that join the bank for these faces' own side."""
        if self.strangers is None:
            return similarities
        to_bank = faces @ (self.strangers if more is None else np.concatenate([self.strangers, more])).T
        if bank_rows is not None:
            to_bank[np.arange(len(faces)), bank_rows] = -np.inf
        face_mean, face_spread = _cohort(to_bank, axis=1)
        return 0.5 * ((similarities - self.class_mean) / self.class_spread
                      + (similarities - face_mean[:, None]) / face_spread[:, None])


def _cohort(similarities: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the COHORT largest similarities along axis."""
    k = min(COHORT, similarities.shape[axis] - 1)  # one short of all: a bank face leaves out its own row
    top = -np.partition(-similarities, k - 1, axis=axis)
    top = top[:k] if axis == 0 else top[:, :k]
    return top.mean(axis=axis), np.maximum(top.std(axis=axis), 1e-6)


def calibrate(vectors: np.ndarray, labels: list[str], head: SoftmaxHead | None,
              bank: np.ndarray | None, own: dict[str, np.ndarray] | None = None) -> Calibration:
    """Fit a gallery's decision rule on its own faces and the stranger bank (see the module's text).

    The head must be the one just fitted on these vectors: its exact leave-one-out probabilities
    stand for faces the gallery has not seen. bank, own: the gallery's stranger bank (or None) and
    its enrolled characters' own bank faces, as gallery_bank gives them.
    """
    vectors = np.asarray(vectors, np.float32)
    if not len(vectors):
        return Calibration(RAW_WEIGHTS, 0.0, 0.0, "fallback")
    index = {name: c for c, name in enumerate(dict.fromkeys(labels))}
    classes = list(index)
    y = np.array([index[label] for label in labels], dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes))
    means = class_means(vectors, y, len(classes))
    normalise = Normaliser(means, bank)
    if head is not None:
        rows, probs = head.held_out
    else:
        rows = np.arange(min(len(y), LEAVE_ONE_OUT_ROWS))
        probs = np.ones((len(rows), 1), np.float32)
    picked = np.arange(len(rows))
    similarities = _similarity_per_class(vectors, y, rows, len(classes))
    scores = normalise(similarities, vectors[rows])
    log_probs = np.log(np.maximum(probs, 1e-6))
    known = counts[y[rows]] >= 2  # a face alone in its character has nothing to be near
    groups = [(scores[known], log_probs[known], y[rows][known])]
    if len(classes) >= 2:  # each face as a stranger: its own character never enrolled
        left_out = scores.copy()
        for label, faces in (own or {}).items():  # never enrolled, it would be in the bank
            mine = y[rows] == index[label]
            left_out[mine] = normalise(similarities[mine], vectors[rows][mine], more=faces)
        left_out[picked, y[rows]] = -np.inf
        others = probs.copy()
        others[picked, y[rows]] = 0.0
        others /= np.maximum(others.sum(axis=1, keepdims=True), 1e-12)
        groups.append((left_out, np.log(np.maximum(others, 1e-6)), np.full(len(rows), -1)))
    if normalise.strangers is not None:
        bank = normalise.strangers
        bank_probs = head.predict_proba(bank) if head is not None else np.ones((len(bank), 1), np.float32)
        groups.append((normalise(bank @ means.T, bank, np.arange(len(bank))), np.log(np.maximum(bank_probs, 1e-6)),
                       np.full(len(bank), -1)))
    fitted = bool(known.any()) and len(groups) > 1
    unfitted = DEFAULT_WEIGHTS if normalise.strangers is not None else RAW_WEIGHTS
    rule = Calibration(_fit_weights(groups) if fitted else unfitted, 0.0, 0.0, "calibrated" if fitted else "fallback")
    if len(groups) > 1:  # strangers set the threshold: characters held out of this gallery, else the bank
        odds = _log_odds(rule.probabilities(*groups[1][:2]).max(axis=1))
        rule.stranger_mean, rule.stranger_spread = float(odds.mean()), float(odds.std())
    elif known.any():  # one character and no bank: keep FALLBACK_KEEP of its own faces
        odds = _log_odds(rule.probabilities(*groups[0][:2]).max(axis=1))
        rule.stranger_mean = float(np.quantile(odds, 1.0 - FALLBACK_KEEP))
    else:  # one face and no bank: nothing to tell a stranger by, so the nearest name is given
        rule.stranger_mean = NAME_EVERY_FACE
    return rule


def _fit_weights(groups) -> tuple[float, float, float]:
    """Maximum-likelihood (similarity, log-probability, none) weights. groups: (scores, log_probs,
    target) with target -1 for "none of them"; the known faces (first group) weigh as much as all
    strangers together (STRANGER_SHARE), the stranger groups share their weight equally."""
    from scipy.optimize import minimize

    scores, log_probs, target = _nearest_columns(*(np.concatenate([g[i] for g in groups]) for i in range(3)))
    known_share = 1.0 - STRANGER_SHARE
    shares = [known_share] + [STRANGER_SHARE / (len(groups) - 1)] * (len(groups) - 1)
    weight = np.concatenate([np.full(len(g[2]), share / max(len(g[2]), 1)) for g, share in zip(groups, shares)])
    compared = np.isfinite(scores)
    scores = np.where(compared, scores, 0.0)
    rows = np.arange(len(target))
    named = target >= 0

    def loss(theta):
        a, b, none = theta
        logits = np.where(compared, a * scores + b * log_probs, -np.inf)
        top = np.maximum(logits.max(axis=1), none)
        e = np.exp(logits - top[:, None])
        e_none = np.exp(none - top)
        total = e.sum(axis=1) + e_none
        p, p_none = e / total[:, None], e_none / total
        picked = np.where(named, logits[rows, np.maximum(target, 0)], none)
        nll = np.log(total) + top - picked
        grad = np.array([
            (p * scores).sum(axis=1) - np.where(named, scores[rows, np.maximum(target, 0)], 0.0),
            (p * log_probs).sum(axis=1) - np.where(named, log_probs[rows, np.maximum(target, 0)], 0.0),
            p_none - (~named)])
        return float(weight @ nll), grad @ weight

    result = minimize(loss, np.array(DEFAULT_WEIGHTS), jac=True, method="L-BFGS-B", bounds=WEIGHT_BOUNDS)
    return tuple(float(w) for w in result.x)


def _nearest_columns(scores: np.ndarray, log_probs: np.ndarray, target: np.ndarray):
    """Each row cut to its FIT_COLUMNS best-scoring characters besides its own, then its own (the
    target's; -inf for a stranger) as the last column, the target renumbered to match: the softmax
    of a large gallery is all but decided by its top scores, and fitting on every column would
    cost seconds per enroll at a thousand characters."""
    rows = np.arange(len(target))
    own = np.where(target >= 0, target, 0)
    others = scores.copy()
    others[rows[target >= 0], own[target >= 0]] = -np.inf
    k = min(FIT_COLUMNS, scores.shape[1])
    columns = np.argpartition(-others, k - 1, axis=1)[:, :k]
    last_score = np.where(target >= 0, scores[rows, own], -np.inf)
    last_log_prob = np.where(target >= 0, log_probs[rows, own], 0.0)
    cut_scores = np.concatenate([np.take_along_axis(others, columns, axis=1), last_score[:, None]], axis=1)
    cut_log_probs = np.concatenate([np.take_along_axis(log_probs, columns, axis=1), last_log_prob[:, None]], axis=1)
    return (cut_scores.astype(np.float64), cut_log_probs.astype(np.float64),
            np.where(target >= 0, k, -1))


def class_means(vectors: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's mean vector, unit length."""
    sums = np.zeros((n_classes, vectors.shape[1]), np.float64)
    np.add.at(sums, y, vectors)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _similarity_per_class(vectors: np.ndarray, y: np.ndarray, rows: np.ndarray, n_classes: int) -> np.ndarray:
    """(len(rows), n_classes) cosine similarity of each row's vector to each class's mean
    vector, its own class's mean taken without it (-inf where that leaves nothing)."""
    sums = np.zeros((n_classes, vectors.shape[1]), np.float64)
    np.add.at(sums, y, vectors)
    x = vectors[rows].astype(np.float64)
    out = x @ sums.T / np.maximum(np.linalg.norm(sums, axis=1), 1e-12)
    own = y[rows]
    picked = np.arange(len(rows))
    rest = sums[own] - x  # the own class's sum without this row
    rest_norm = np.linalg.norm(rest, axis=1)
    out[picked, own] = np.where(rest_norm > 1e-9, (x * rest).sum(axis=1) / np.maximum(rest_norm, 1e-12), -np.inf)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-9, 1 - 1e-9)  # float32 would round 1 - 1e-9 to 1
    return np.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))
