"""Naming faces found by each detector in whole pictures, on characters no trained part has seen.

Checks that the learned detector's boxes frame a face as the embedder's crops expect: for
each character of ../shared/data/faces/extra8, 10 crops are enrolled whole; each of the next 15 is pasted, at several sizes and places,
into a drawn 1280x960 picture, and the picture is named with each detector. A picture is
right when a face gets the character's name and no face gets another; wrong when any face
gets another name; else nothing named. The crops named whole are the ceiling.

The shipped projection was trained on extra8 too, so the recognizers use one made by the same
recipe without extra8's characters (from the features `animeface train` caches: the first run
embeds the three training sets, about 15 minutes on 2 cores).

    PYTHONPATH=. python benchmarks/detected_naming.py [--per-character 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import animeface  # noqa: E402
from animeface.io import load_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
WEIGHTS = SHARED / "models" / "faceboxes" / "FaceBoxes_epoch_90.pth"
BACKBONE = str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5")
ENROLLED = 10


def background(rng, width=1280, height=960) -> np.ndarray:
    small = rng.integers(0, 256, size=(6, 8, 3)).astype(np.uint8)
    canvas = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(30):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(canvas, p1, p2, colour, int(rng.integers(2, 12)), cv2.LINE_AA)
    return canvas


def pasted(crop: np.ndarray, rng) -> np.ndarray:
    canvas = background(rng)
    side = int(rng.choice([200, 300, 450]))
    x, y = int(rng.integers(0, canvas.shape[1] - side)), int(rng.integers(0, canvas.shape[0] - side))
    canvas[y:y + side, x:x + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    return canvas


def verdict(faces, name) -> str:
    labels = {f.label for f in faces} - {None}
    if labels - {name}:
        return "wrong"
    return "right" if name in labels else "none"


def projection_without(left_out_root: str, folder: Path) -> Path:
    """The shipped projection's recipe fitted on its training sets less one, with its stranger bank."""
    from animeface.embed import Embedder, Recipe
    from animeface.train import fitted_projection, training_features

    embedder = Embedder(BACKBONE, projection=None, recipe=Recipe())
    roots = [SHARED / "faces" / name for name in ("holoen20", "moeimouto10", "extra8")]
    views, labels, _ = training_features(embedder, roots, seed=0, progress=True)
    number = [r.name for r in roots].index(left_out_root)
    fit = ~np.char.startswith(labels.astype(str), f"{number}:")
    projection = fitted_projection({k: v[fit] for k, v in views.items()}, labels[fit], embedder.recipe, seed=0)
    return projection.save(folder / f"without-{left_out_root}",
                           {"name": f"without-{left_out_root}", "backbone_id": embedder.backbone_id})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-character", type=int, default=15)
    parser.add_argument("--margin", type=float, default=None, help="crop margin (default: the Recognizer's)")
    args = parser.parse_args()
    os.environ.setdefault("ANIMEFACE_DETECTOR", str(WEIGHTS))  # the shared weights, by the path users' downloads take
    rng = np.random.default_rng(0)
    characters = sorted(p for p in (SHARED / "faces" / "extra8").iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        margin = {} if args.margin is None else {"margin": args.margin}
        projection = projection_without("extra8", Path(tmp))
        recs = {kind: animeface.Recognizer(Path(tmp) / kind, backbone=BACKBONE, cascade=CASCADE, detector=kind,
                                           projection=projection, progress=False, **margin)
                for kind in ("faceboxes", "cascade")}
        tests = []
        for folder in characters:
            files = sorted(folder.iterdir())
            for rec in recs.values():
                rec.enroll(folder.name, files[:ENROLLED], faces="whole")
            tests += [(folder.name, load_image(f)) for f in files[ENROLLED:ENROLLED + args.per_character]]
        counts = {kind: {"right": 0, "wrong": 0, "none": 0} for kind in ("whole crop", *recs)}
        for name, crop in tests:
            counts["whole crop"][verdict(recs["cascade"].identify(crop, faces="whole"), name)] += 1
            picture = pasted(crop, rng)
            for kind, rec in recs.items():
                counts[kind][verdict(rec.identify(picture, faces="auto"), name)] += 1
    print(f"{len(characters)} left-out characters, {ENROLLED} enrolled each, {len(tests)} test pictures\n")
    print("| faces from | named right | wrong name | nothing named |")
    print("|---|---|---|---|")
    for kind, c in counts.items():
        print(f"| {kind} | {c['right'] / len(tests):.1%} | {c['wrong'] / len(tests):.1%} | {c['none'] / len(tests):.1%} |")


if __name__ == "__main__":
    main()
