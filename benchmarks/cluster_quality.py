"""How well faces are grouped by character, on labelled face crops (one subfolder per character).

Two ways, both scored as the issue scores `animeface cluster --json`: the adjusted Rand
index over the grouped faces, the share of faces grouped, and the purity of the groups.

    # end to end, as a user runs it: every picture under ROOT, an empty gallery
    python benchmarks/cluster_quality.py folder ROOT --backbone WEIGHTS [--projection NPZ]

    # characters the projection never saw: for each fold, a projection is fitted without
    # LEFT_OUT characters, its threshold calibrated on the fitted characters alone (as
    # `animeface train` does), and the left-out characters' faces are grouped
    python benchmarks/cluster_quality.py folds ROOT... --backbone WEIGHTS [--pick 1] [--left-out 8]

Features for `folds` are cached by `animeface train` (ANIMEFACE_CACHE/features).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def scores(truth: np.ndarray, group: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score

    grouped = group >= 0
    purity = sum(np.unique(truth[group == g], return_counts=True)[1].max() for g in np.unique(group[grouped]))
    return {"ari": float(adjusted_rand_score(truth[grouped], group[grouped])) if grouped.sum() > 1 else 0.0,
            "grouped": float(grouped.mean()), "purity": purity / max(1, grouped.sum()),
            "groups": len(np.unique(group[grouped])), "characters": len(np.unique(truth)), "faces": len(truth)}


def line(name: str, s: dict) -> str:
    return (f"{name}: ARI {s['ari']:.3f}  grouped {s['grouped']:.1%}  purity {s['purity']:.3f}  "
            f"({s['groups']} groups for {s['characters']} characters, {s['faces']} faces)")


def folder(args) -> None:
    import animeface

    rec = animeface.Recognizer(Path(args.gallery), backbone=args.backbone, projection=args.projection, progress=True)
    start = time.perf_counter()
    result = rec.cluster([args.root], faces=args.faces)
    seconds = time.perf_counter() - start
    faces = [f for g in result.groups for f in g] + result.ungrouped
    group = np.array([g for g, members in enumerate(result.groups) for _ in members] + [-1] * len(result.ungrouped))
    truth = np.array([Path(f.source).relative_to(args.root).parts[0] for f in faces])
    print(line(str(args.root), scores(truth, group)) + f"  threshold {result.threshold:.4f}, {seconds:.1f} s")


def folds(args) -> None:
    from animeface.cluster import group, threshold_from
    from animeface.embed import Embedder, Projection
    from animeface.train import fit_projection, leave_characters_out, training_features

    embedder = Embedder(args.backbone, projection=None)
    views, labels, _ = training_features(embedder, [Path(r) for r in args.roots], seed=0, progress=True)
    pool = np.unique([c for c in labels if c.startswith(f"{args.pick}:")] if args.pick is not None else labels)
    rng = np.random.default_rng(args.seed)
    results = []
    for fold in range(args.folds):
        left_out = rng.choice(pool, args.left_out, replace=False)
        fit = ~np.isin(labels, left_out)
        fitted = {k: v[fit] for k, v in views.items()}
        _, calibration = leave_characters_out(fitted, labels[fit], embedder.recipe, seed=fold, shots=())
        mean, matrix = fit_projection(np.concatenate(list(fitted.values())), np.concatenate([labels[fit]] * len(views)))
        rows = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:args.per] for c in left_out])
        vectors = Projection(mean, matrix, embedder.recipe)(views["original"][rows])
        results.append(scores(labels[rows], group(vectors, threshold_from(calibration))))
        print(line(f"fold {fold + 1}", results[-1]) + f"  threshold {threshold_from(calibration):.4f}", flush=True)
    mean = {k: float(np.mean([r[k] for r in results])) for k in ("ari", "grouped", "purity")}
    low = {k: float(np.min([r[k] for r in results])) for k in ("ari", "grouped", "purity")}
    print(f"mean over {args.folds} folds: ARI {mean['ari']:.3f}  grouped {mean['grouped']:.1%}  purity {mean['purity']:.3f}"
          f"   (lowest fold: ARI {low['ari']:.3f}  grouped {low['grouped']:.1%}  purity {low['purity']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("folder")
    p.set_defaults(run=folder)
    p.add_argument("root", type=Path)
    p.add_argument("--backbone")
    p.add_argument("--projection", default="default")
    p.add_argument("--faces", default="whole", choices=["whole", "auto", "detect"])
    p.add_argument("--gallery", default="/nonexistent/empty-gallery", help="a folder with no gallery: nothing named")
    p = sub.add_parser("folds")
    p.set_defaults(run=folds)
    p.add_argument("roots", nargs="+")
    p.add_argument("--backbone")
    p.add_argument("--pick", type=int, help="leave out characters of this ROOT only (0 = the first)")
    p.add_argument("--left-out", type=int, default=8)
    p.add_argument("--per", type=int, default=34, help="faces per left-out character (the issue's: about 34)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
