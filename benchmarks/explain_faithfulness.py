"""Is `animeface explain` faithful? The deletion check on characters the projection never saw.

The shipped projection was trained on every character in ../shared/data/faces, so it is fitted
again here (animeface.train.fitted_projection, same recipe and settings) without six holoen20
characters. Those six are enrolled from 10 crops each, and 20 further crops of each are
explained against their best candidate. For each crop the hottest, a random and the coldest
20% of the map's cells are blanked (mid-grey, then blurred), and so is the hottest cells' shape
moved to a random place; the drop of the similarity with that candidate is recorded. The same
cells are also removed from the feature maps themselves (no pixel changed), which is what the map
is a first-order account of. Prints the mean drops and the ratio hottest / random.

With --occlusion-every N, one crop in N is also given a measured map: each cell blanked alone and
the drop recorded (289 network runs per crop and fill). Its hottest 20% is the best a map of
single cells can pick for this check, so its ratio is the ceiling to read the explanation's against.

    python benchmarks/explain_faithfulness.py [--per-character 20] [--occlusion-every 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BACKBONE = str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5")
ROOTS = [SHARED / "faces" / name for name in ("holoen20", "moeimouto10", "extra8")]
#: holoen20 characters left out of the fit: the hidden ones.
HIDDEN = ("ame", "bae", "gura", "ina", "kronii", "mumei")
ENROLLED = 10


def projection_without(hidden, folder: Path) -> Path:
    """The shipped projection's recipe fitted on every training character but the hidden ones."""
    from animeface.embed import Embedder, Recipe
    from animeface.train import fitted_projection, training_features

    embedder = Embedder(BACKBONE, projection=None, recipe=Recipe())
    views, labels, _ = training_features(embedder, ROOTS, seed=0, progress=True)
    fit = ~np.isin(labels, [f"0:{name}" for name in hidden])
    assert (~fit).sum() == 120 * len(hidden), "every hidden character's crops left out"
    projection = fitted_projection({k: v[fit] for k, v in views.items()}, labels[fit], embedder.recipe, seed=0)
    return projection.save(folder / "without-hidden", {"name": "without-hidden", "backbone_id": embedder.backbone_id})


def occlusion_map(embedder, explanation, target: np.ndarray, fill: str) -> np.ndarray:
    """Each cell's measured drop of the similarity with the target when it alone is blanked."""
    from animeface.explain import blanked, vectors_and_maps

    cells = np.eye(explanation.heat.size, dtype=bool).reshape((-1,) + explanation.heat.shape)
    crops = np.stack([explanation.crop] + [blanked(explanation.crop, one, fill) for one in cells])
    similarities = vectors_and_maps(embedder, crops)[0] @ np.asarray(target, np.float32)
    return (similarities[0] - similarities[1:]).reshape(explanation.heat.shape)


def print_table(drops: dict[str, list[dict]]) -> None:
    print("| blanked with | hottest 20% | random 20% | coldest 20% | hottest's shape, moved | hottest / random | "
          "crops where hottest > random |")
    print("|---|---|---|---|---|---|---|")
    for fill, rows in drops.items():
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        wins = np.mean([r["hottest"] > r["random"] for r in rows])
        print(f"| {'zeroed in the feature maps' if fill == 'features' else fill} | {mean['hottest']:.4f} | "
              f"{mean['random']:.4f} | {mean['coldest']:.4f} | {mean['moved']:.4f} | "
              f"{mean['hottest'] / mean['random']:.2f} | {wins:.0%} |")


def main() -> None:
    import animeface
    from animeface.explain import FILLS, deletion_drops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-character", type=int, default=20)
    parser.add_argument("--occlusion-every", type=int, default=0, metavar="N",
                        help="also measure single-cell occlusion maps on one crop in N (slow; 0: off)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ANIMEFACE_HOME", tmp)
        rec = animeface.Recognizer(Path(tmp) / "g", backbone=BACKBONE,
                                   projection=projection_without(HIDDEN, Path(tmp)), progress=False)
        tests = []
        for name in HIDDEN:
            files = sorted((ROOTS[0] / name).iterdir())
            rec.enroll(name, files[:ENROLLED], faces="whole")
            tests += [(name, f) for f in files[ENROLLED:ENROLLED + args.per_character]]
        centroids, row = rec.gallery.centroids(), {n: i for i, n in enumerate(rec.characters)}
        drops = {fill: [] for fill in FILLS}
        pixel_fills = [fill for fill in FILLS if fill != "features"]
        sampled = {fill: [] for fill in pixel_fills}
        measured = {fill: [] for fill in pixel_fills}
        right = 0
        for n, (name, path) in enumerate(tests):
            item = rec.explain(path, faces="whole", top=1)[0]
            right += item.candidate == name
            target = centroids[row[item.candidate]]
            for fill in FILLS:
                drops[fill].append(deletion_drops(rec.embedder, item, target, rng, fill=fill))
            if args.occlusion_every and n % args.occlusion_every == 0:
                for fill in pixel_fills:
                    sampled[fill].append(drops[fill][-1])
                    occluded = replace(item, heat=occlusion_map(rec.embedder, item, target, fill))
                    measured[fill].append(deletion_drops(rec.embedder, occluded, target, rng, fill=fill))
    print(f"{len(tests)} crops of {len(HIDDEN)} characters the projection never saw ({', '.join(HIDDEN)}), "
          f"{ENROLLED} enrolled each; best candidate right for {right}; 20% of the 17x17 cells blanked\n")
    print_table(drops)
    if args.occlusion_every:
        count = len(next(iter(sampled.values())))
        print(f"\nOne crop in {args.occlusion_every} ({count} crops): the explanation's map, then each cell's measured "
              "drop when blanked alone (the ceiling for a map of single cells)\n")
        print_table({f"{fill}, explanation" if i == 0 else f"{fill}, single-cell occlusion": rows
                     for fill in pixel_fills for i, rows in enumerate((sampled[fill], measured[fill]))})


if __name__ == "__main__":
    main()
