"""Recognition figures of the embedder on real ImageNet weights: untrained recipe against the
trained projection, on characters the projection never saw.

    PYTHONPATH=. python benchmarks/embedder.py [--backbone PATH] [--folds 5]

The faces of ../shared/data/faces/holoen20 and moeimouto10 are embedded once through
`animeface.train.training_features` (cached in ANIMEFACE_CACHE, shared with `animeface
train`). Whole characters are then left out of the projection's fit in turn (5 folds of 6);
each left-out set is enrolled from 5, 10 and 20 shots and its other faces named by the
recognizer's own decision (softmax head + calibrated thresholds). Strangers: 4 of a fold's
characters enrolled from 10 shots, the other 2 shown. The last table uses the projection
fitted on every character, as shipped, on holoen20 (characters it saw, other pictures).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from animeface.detect import Box
from animeface.embed import Embedder, Projection, Recipe
from animeface.gallery import Gallery
from animeface.recognizer import Recognizer
from animeface.train import fit_projection, training_features

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOTS = [SHARED / "faces" / "holoen20", SHARED / "faces" / "moeimouto10"]
WEIGHTS = SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5"


def name_faces(rec: Recognizer, vectors, labels, enrolled, tested):
    """The recognizer's answers (None: unknown) and head probabilities for `tested`,
    with a gallery of the `enrolled` rows."""
    rec.gallery = Gallery("bench", vectors.shape[1], {})
    rec.gallery.add(vectors[enrolled], [{"label": str(labels[i]), "source": "", "sha256": "0" * 64}
                                        for i in enrolled])
    rec._refit()
    faces = rec.name_faces(vectors[tested], [Box(0, 0, 1, 1, 1.0)] * len(tested))
    return [f.label for f in faces], rec.head.predict_proba(vectors[tested]).max(axis=1)


def split(labels, characters, shots, rng):
    enrolled, tested = [], []
    for c in characters:
        rows = rng.permutation(np.flatnonzero(labels == c))
        enrolled += list(rows[:shots])
        tested += list(rows[shots:])
    return enrolled, tested


def known_scores(rec, vectors, labels, characters, shots, rng):
    enrolled, tested = split(labels, characters, shots, rng)
    answers, _ = name_faces(rec, vectors, labels, enrolled, tested)
    closed = np.array(rec.head.classes)[rec.head.predict_proba(vectors[tested]).argmax(axis=1)]
    truth = labels[tested]
    return (np.mean(closed == truth), np.mean([a == t for a, t in zip(answers, truth)]),
            np.mean([a is None for a in answers]))


def stranger_scores(rec, vectors, labels, known, strangers, shots, rng):
    from sklearn.metrics import roc_auc_score

    enrolled, tested = split(labels, known, shots, rng)
    shown = list(np.flatnonzero(np.isin(labels, strangers)))
    answers, probs = name_faces(rec, vectors, labels, enrolled, tested + shown)
    k = len(tested)
    auroc = roc_auc_score(np.r_[np.ones(k), np.zeros(len(shown))], probs)
    right = np.mean([a == t for a, t in zip(answers[:k], labels[tested])])
    return np.mean([a is None for a in answers[k:]]), auroc, right


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=str(WEIGHTS))
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    embedder = Embedder(args.backbone, projection=None, recipe=Recipe())
    views, labels, _ = training_features(embedder, ROOTS, seed=0, progress=True)
    characters = np.unique(labels)
    rng = np.random.default_rng(0)
    holo = rng.permutation([c for c in characters if c.startswith("0:")])
    moe = rng.permutation([c for c in characters if c.startswith("1:")])
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recognizer(Path(tmp) / "g", backbone=args.backbone, projection=None, progress=False)
        rows = {}
        for fold in range(args.folds):
            left_out = list(holo[fold::args.folds]) + list(moe[fold::args.folds])
            fit = ~np.isin(labels, left_out)
            mean, matrix = fit_projection(np.concatenate([v[fit] for v in views.values()]),
                                          np.concatenate([labels[fit]] * len(views)))
            spaces = {"untrained": views["original"],
                      "trained": Projection(mean, matrix, embedder.recipe)(views["original"])}
            for space, vectors in spaces.items():
                for shots in (5, 10, 20):
                    rows.setdefault((space, shots), []).append(
                        known_scores(rec, vectors, labels, left_out, shots, np.random.default_rng([fold, shots])))
                known, strangers = left_out[:-2], left_out[-2:]
                rows.setdefault((space, "strangers"), []).append(
                    stranger_scores(rec, vectors, labels, known, strangers, 10, np.random.default_rng(fold)))
        print("\nLeft-out characters (never in the projection's fit), about 6 per fold, "
              f"mean of {args.folds} folds\n")
        print("| embedder | shots | closed-set top-1 | named right | known called unknown |")
        print("|---|---|---|---|---|")
        for (space, shots), values in rows.items():
            if shots != "strangers":
                c, r, u = np.mean(values, axis=0)
                print(f"| {space} | {shots} | {c:.1%} | {r:.1%} | {u:.1%} |")
        print("\n| embedder | strangers flagged unknown | AUROC (head probability) | known named right |")
        print("|---|---|---|---|")
        for space in ("untrained", "trained"):
            s, a, r = np.mean(rows[(space, "strangers")], axis=0)
            print(f"| {space} | {s:.1%} | {a:.3f} | {r:.1%} |")
        shipped = Embedder(args.backbone)
        holoen = [c for c in characters if c.startswith("0:")]
        vectors = shipped.projection(views["original"])
        print("\nShipped projection (fitted on every character), holoen20, mean of 3 splits\n")
        print("| case | closed-set top-1 | named right | known called unknown | strangers flagged | AUROC |")
        print("|---|---|---|---|---|---|")
        c, r, u = np.mean([known_scores(rec, vectors, labels, holoen, 20, np.random.default_rng(i))
                           for i in range(3)], axis=0)
        print(f"| 20 characters x 20 shots | {c:.1%} | {r:.1%} | {u:.1%} | | |")
        results = []
        for i in range(3):
            order = np.random.default_rng(i).permutation(holoen)
            results.append(stranger_scores(rec, vectors, labels, list(order[:15]), list(order[15:]), 20,
                                           np.random.default_rng(i)))
        s, a, r = np.mean(results, axis=0)
        print(f"| 15 enrolled x 20 shots, 5 strangers | | {r:.1%} | | {s:.1%} | {a:.3f} |")


if __name__ == "__main__":
    main()
