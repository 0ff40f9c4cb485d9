"""Known faces named right and strangers called unknown, on characters left out of every trained part.

    PYTHONPATH=. python benchmarks/open_set.py [--episodes 20] [--bootstrap 1000]

The faces of ../shared/data/faces/holoen20, moeimouto10 and extra8 (38 characters) are embedded
once through `animeface.train.training_features` (cached in ANIMEFACE_CACHE, shared with
`animeface train`). Whole characters are left out in turn (5 folds): the projection and its
stranger bank are fitted on the others, exactly as `animeface train` fits them. In each
episode, 6 left-out characters are enrolled from 5, 10 or 20 shots, and their other faces and
every face of 2 more left-out characters (the strangers) are named by the recognizer's own
code. A case leaves all of holoen20 out (the projection sees only the other 18 characters)
and enrolls 15 of its characters from 20 shots, 5 more shown as strangers. A last case stands for
a user enrolling characters the embedder was trained on: half of each holoen20 character's faces
are trained on (and in the stranger bank, under the character's folder name), and 15 of them are
enrolled under that name from 20 of their other faces, 5 more shown as strangers; "whole bank" is
the rule before the bank characters a gallery enrolls were left out of its bank.

"before" is the previous release: its projection's shrinkage (0.03) and its decision rule
(thresholds on the head's probability and the similarity to the character's mean, calibrated
on the gallery's own faces only), kept below as the baseline. "after" is this release.
Each figure is the mean over episodes with a 95% bootstrap interval (episodes resampled).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist

import numpy as np

from animeface import metrics
from animeface.detect import Box
from animeface.embed import Embedder, Recipe
from animeface.gallery import Gallery
from animeface.head import SoftmaxHead
from animeface.models import STRANGER_REFUSAL
from animeface.recognizer import Recognizer
from animeface.thresholds import _similarity_per_class
from animeface.train import FOLDS, SHRINKAGE, bank_names, fitted_projection, training_features

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOTS = [SHARED / "faces" / name for name in ("holoen20", "moeimouto10", "extra8")]
WEIGHTS = SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5"
FIGURES = ("known named right", "strangers called unknown", "AUROC", "calibration error")
PREVIOUS_SHRINKAGE = 0.03


def previous_rule(vectors, labels, head):
    """The previous release's thresholds: of the (probability, similarity) pairs that refuse at most
    6.5% of its own right-named faces held out, the one maximising right-named minus wrong-named
    minus half the accepted faces of a character whose own column is removed."""
    classes = list(dict.fromkeys(labels))
    y = np.array([classes.index(label) for label in labels])
    rows, probs = head.held_out
    near = _similarity_per_class(vectors, y, rows, len(classes))
    picked, truth = np.arange(len(rows)), y[rows]
    predicted = probs.argmax(axis=1)
    known = np.stack([probs[picked, predicted], near[picked, predicted]], axis=1)
    right = predicted == truth
    others = probs.copy()
    others[picked, truth] = 0.0
    other = others.argmax(axis=1)
    stranger = np.stack([others[picked, other] / others.sum(axis=1), near[picked, other]], axis=1)
    shares = np.linspace(0.0, 0.065, 21)
    probabilities = np.r_[0.0, np.quantile(known[right, 0], shares[1:])]
    mean, spread = known[right, 1].mean(), known[right, 1].std()
    similarities = np.r_[-1.0, [mean + spread * NormalDist().inv_cdf(q) for q in shares[1:]]]

    def accepted(r):
        return ((r[:, 0][:, None, None] >= probabilities[None, :, None])
                & (r[:, 1][:, None, None] >= similarities[None, None, :])).sum(axis=0)

    gain = accepted(known[right]) - accepted(known[~right]) - 0.5 * accepted(stranger)
    refused = np.mean(known[right, 0][:, None] < probabilities[None, :], axis=0)[:, None] + shares[None, :]
    gain = np.where(refused <= 0.065 + 1e-9, gain, -np.inf)
    p, s = np.unravel_index(np.argmax(gain), gain.shape)
    return probabilities[p], similarities[s]


def episode_before(vectors, labels, enrolled, tested, is_known):
    head = SoftmaxHead().fit(vectors[enrolled], list(labels[enrolled]))
    p_min, s_min = previous_rule(vectors[enrolled], list(labels[enrolled]), head)
    classes = head.classes
    y = np.array([classes.index(label) for label in labels[enrolled]])
    sums = np.zeros((len(classes), vectors.shape[1]))
    np.add.at(sums, y, vectors[enrolled])
    means = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    probs = head.predict_proba(vectors[tested])
    top = probs.argmax(axis=1)
    p = probs[np.arange(len(top)), top]
    s = (vectors[tested] @ means.T)[np.arange(len(top)), top]
    answers = np.where((p >= p_min) & (s >= s_min), np.array(classes)[top], None)
    return figures(answers, np.array(classes)[top], p, np.minimum(p - p_min, s - s_min), labels[tested], is_known)


def episode_after(rec, vectors, labels, enrolled, tested, is_known):
    rec.gallery = Gallery(rec.embedder.backbone_id, vectors.shape[1], rec.embedder.description)
    rec.gallery.add(vectors[enrolled], [{"label": str(labels[i]), "source": "", "sha256": "0" * 64}
                                        for i in enrolled])
    rec._refit()
    faces = rec.name_faces(vectors[tested], [Box(0, 0, 1, 1, 1.0)] * len(tested))
    top = np.array([f.candidates[0][0] for f in faces])
    p = np.array([f.candidates[0][1] for f in faces])
    return figures(np.array([f.label for f in faces]), top, p, p, labels[tested], is_known)


def figures(answers, top, probability, score, truth, is_known):
    right = np.array([a == t for a, t in zip(answers, truth)])
    return (right[is_known].mean(), np.mean([a is None for a in answers[~is_known]]),
            metrics.auroc(score[is_known], score[~is_known]),
            metrics.calibration_error(probability, (top == truth) & is_known))


def draw(labels, characters, shots, enrolled_count, rng):
    pick = rng.permutation(characters)
    enrolled, tested = [], []
    for c in pick[:enrolled_count]:
        rows = rng.permutation(np.flatnonzero(labels == c))
        enrolled += list(rows[:shots])
        tested += list(rows[shots:])
    shown = list(np.flatnonzero(np.isin(labels, pick[enrolled_count:])))
    return enrolled, np.array(tested + shown), np.r_[np.ones(len(tested), bool), np.zeros(len(shown), bool)]


def fold_space(views, labels, fit, recipe, shrinkage):
    """Vectors of every face in the space of a projection fitted on the `fit` rows, and that
    projection, carrying the stranger bank of the fitted characters and, as `animeface train`
    writes them on its card, their names."""
    projection = fitted_projection({k: v[fit] for k, v in views.items()}, labels[fit], recipe, 0, shrinkage)
    projection.card = {"stranger_bank": {"names": bank_names(labels[fit])}}
    return projection(views["original"]), projection


def half_of_each(labels, characters, rng):
    """Rows of half of each character's faces, drawn at random."""
    rows = np.zeros(len(labels), bool)
    for c in characters:
        faces = rng.permutation(np.flatnonzero(labels == c))
        rows[faces[:len(faces) // 2]] = True
    return rows


def interval(values, bootstrap, rng):
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(bootstrap)]
    return values.mean(), *np.percentile(means, [2.5, 97.5])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=str(WEIGHTS))
    parser.add_argument("--episodes", type=int, default=20, help="episodes per fold and number of shots")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--refusals", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.98],
                        help="stranger_refusal settings for the knob table")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    embedder = Embedder(args.backbone, projection=None, recipe=Recipe())
    views, labels, _ = training_features(embedder, ROOTS, seed=0, progress=True)
    characters = np.unique(labels)
    order = np.random.default_rng(0).permutation(characters)
    results, knob = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recognizer(Path(tmp) / "g", backbone=args.backbone, projection=None, progress=False)
        cases = [(f"fold {f}", order[f::FOLDS], 6, shots) for f in range(FOLDS) for shots in (5, 10, 20)]
        holoen = characters[np.char.startswith(characters.astype(str), "0:")]
        cases.append(("holoen20 left out", holoen, 15, 20))
        cases.append(("holoen20 half in training", holoen, 15, 20))
        hidden = half_of_each(labels, holoen, np.random.default_rng(0))
        for name, left_out, enrolled_count, shots in cases:
            trained_on = name == "holoen20 half in training"
            fit = ~hidden if trained_on else ~np.isin(labels, left_out)
            drawn_from = np.where(hidden, labels, "") if trained_on else labels
            before_vectors, _ = fold_space(views, labels, fit, embedder.recipe, PREVIOUS_SHRINKAGE)
            after_vectors, projection = fold_space(views, labels, fit, embedder.recipe, SHRINKAGE)
            key = f"15 enrolled + 5 strangers, 20 shots, {name}" if enrolled_count == 15 else \
                f"6 enrolled + 2 strangers, {shots} shots"
            for e in range(args.episodes):
                rng = np.random.default_rng([e, shots, int(name[-1]) if name[-1].isdigit() else 9])
                enrolled, tested, is_known = draw(drawn_from, left_out, shots, enrolled_count, rng)
                results.setdefault((key, "before"), []).append(
                    episode_before(before_vectors, labels, enrolled, tested, is_known))
                rec.stranger_refusal = STRANGER_REFUSAL
                if trained_on:  # labels "0:gura" name the bank's "gura" (thresholds.name_key drops the "0")
                    rec.embedder.projection = replace(projection, card={})
                    results.setdefault((key, "whole bank"), []).append(
                        episode_after(rec, after_vectors, labels, enrolled, tested, is_known))
                rec.embedder.projection = projection
                results.setdefault((key, "after"), []).append(
                    episode_after(rec, after_vectors, labels, enrolled, tested, is_known))
                if enrolled_count == 6 and shots in (5, 10):
                    for refusal in args.refusals:
                        rec.stranger_refusal = refusal
                        knob.setdefault((shots, refusal), []).append(
                            episode_after(rec, after_vectors, labels, enrolled, tested, is_known))
            print(f"{name}: {enrolled_count} enrolled, {shots} shots done", flush=True)
    rng = np.random.default_rng(0)
    print(f"\n{len(characters)} characters, {FOLDS} folds, {args.episodes} episodes per fold and case; "
          "mean [95% bootstrap interval]\n")
    print("| case | release | " + " | ".join(FIGURES) + " |")
    print("|---|---|" + "---|" * len(FIGURES))
    for (case, release), rows in results.items():
        cells = []
        for i, figure in enumerate(FIGURES):
            mean, low, high = interval([r[i] for r in rows], args.bootstrap, rng)
            cells.append(f"{mean:.1%} [{low:.1%}, {high:.1%}]" if figure != "AUROC" and figure != "calibration error"
                         else f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        print(f"| {case} | {release} | " + " | ".join(cells) + " |")
    print("\nThe knob (after; 6 enrolled + 2 strangers)\n")
    print("| shots | stranger_refusal | known named right | strangers called unknown |")
    print("|---|---|---|---|")
    for (shots, refusal), rows in sorted(knob.items()):
        print(f"| {shots} | {refusal} | {np.mean([r[0] for r in rows]):.1%} | {np.mean([r[1] for r in rows]):.1%} |")


if __name__ == "__main__":
    main()
