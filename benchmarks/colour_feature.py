"""Does the colour histogram help naming, at which weight, with which bins and head penalty?

Top-1 accuracy of animeface's SoftmaxHead on faces/holoen20 (tuning set) and
faces/moeimouto10 (held-out check) with k enrolled crops per character and up
to 40 unseen crops per character as queries, medians over random splits. A
vector is built as Embedder builds it: the unit CNN vector and the unit colour
histogram times the weight, concatenated and L2-normalised. CNN vectors
(backbone random-init:0) and histograms are cached outside the repository by
benchmarks/embed_cache.py, so a rerun takes seconds.

    PYTHONPATH=. python benchmarks/colour_feature.py                 # colour weights
    PYTHONPATH=. python benchmarks/colour_feature.py --bins 8,4,8 16,4,8 32,4,8
    PYTHONPATH=. python benchmarks/colour_feature.py --weights 0.5 --penalties 0.01 0.05 0.2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import cnn_vectors, colour_vectors  # noqa: E402

from animeface.embed import DEFAULT_COLOUR_WEIGHT, GREY_BINS, HUE_BINS, SAT_BINS  # noqa: E402
from animeface.head import DEFAULT_PENALTY, SoftmaxHead  # noqa: E402

SHOTS = (5, 10, 20, 30)
TEST_PER_CLASS = 40


def combine(cnn: np.ndarray, colour: np.ndarray, weight: float) -> np.ndarray:
    if weight == 0:
        return cnn
    vec = np.concatenate([cnn, weight * colour], axis=1)
    return vec / np.linalg.norm(vec, axis=1, keepdims=True)


def accuracy(vectors, labels, shots, seed, penalty) -> float:
    """Top-1 accuracy of one random split with `shots` enrolled crops per character."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        train += list(members[:shots])
        test += list(members[shots:shots + TEST_PER_CLASS])
    head = SoftmaxHead(penalty).fit(vectors[train], [str(c) for c in labels[train]])
    predicted = np.array(head.classes)[head.predict_proba(vectors[test]).argmax(axis=1)]
    return float(np.mean(predicted == labels[test].astype(str)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["holoen20", "moeimouto10"])
    parser.add_argument("--weights", nargs="+", type=float, default=[0, 0.25, 0.5, 0.75, 1.0, 1.5])
    parser.add_argument("--bins", nargs="+", default=[f"{HUE_BINS},{SAT_BINS},{GREY_BINS}"],
                        help="hue,saturation,grey bin counts")
    parser.add_argument("--penalties", nargs="+", type=float, default=[DEFAULT_PENALTY])
    parser.add_argument("--splits", type=int, default=5)
    args = parser.parse_args()
    print(f"defaults: colour weight {DEFAULT_COLOUR_WEIGHT}, bins {HUE_BINS},{SAT_BINS},{GREY_BINS}, "
          f"penalty {DEFAULT_PENALTY}; median top-1 % over {args.splits} splits")
    for name in args.sets:
        cnn, labels, classes, _ = cnn_vectors(name)
        print(f"\n{name} ({len(classes)} characters)")
        print(f"{'bins':>8} {'weight':>6} {'penalty':>7} " + " ".join(f"{s:>3}-shot" for s in SHOTS))
        for bins in args.bins:
            colour = colour_vectors(name, tuple(int(b) for b in bins.split(",")))
            for weight in args.weights:
                vectors = combine(cnn, colour, weight)
                for penalty in args.penalties:
                    cells = [np.median([accuracy(vectors, labels, shots, seed, penalty)
                                        for seed in range(args.splits)]) for shots in SHOTS]
                    print(f"{bins:>8} {weight:>6g} {penalty:>7g} " + " ".join(f"{100 * a:>7.1f}%" for a in cells),
                          flush=True)


if __name__ == "__main__":
    main()
