"""Naming faces found by each detector in whole pictures, on characters no trained part has seen.

Checks that the detectors' boxes frame a face as the embedder expects. Each training set of
../shared/data/faces is left out in turn: the recognizers use a projection (and stranger bank)
fitted by the shipped recipe on the other two sets, from the features `animeface train`
caches (the first run embeds the three sets, about 15 minutes on 2 cores). For 8 characters of
the left-out set, 10 face crops each are enrolled and the next ones are named; every crop is
also pasted, at 200-450 px, into a drawn 1280x960 picture. Three ways:

- crops -> crops: crops enrolled and named whole (the ceiling);
- crops -> pictures: crops enrolled whole, pictures named through the detector;
- pictures -> pictures: pictures enrolled and named through the detector (a user who enrolls
  whole illustrations).

A picture is right when a face gets the character's name and no face gets another; wrong when
any face gets another name; else nothing is named.

    PYTHONPATH=. python benchmarks/detected_naming.py [--tested 10] [--margin 0.25]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import animeface  # noqa: E402
from animeface.io import load_image  # noqa: E402
from animeface.models import DETECTORS  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
WEIGHTS = SHARED / "models" / "faceboxes" / "FaceBoxes_epoch_90.pth"
BACKBONE = str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5")
SETS = ("holoen20", "moeimouto10", "extra8")
CHARACTERS = 8
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


def projection_without(left_out: str, folder: Path) -> Path:
    """The shipped projection's recipe fitted on the training sets less one, with its stranger bank."""
    from animeface.embed import Embedder, Recipe
    from animeface.train import fitted_projection, training_features

    embedder = Embedder(BACKBONE, projection=None, recipe=Recipe())
    views, labels, _ = training_features(embedder, [SHARED / "faces" / name for name in SETS], seed=0, progress=True)
    fit = ~np.char.startswith(labels.astype(str), f"{SETS.index(left_out)}:")
    projection = fitted_projection({k: v[fit] for k, v in views.items()}, labels[fit], embedder.recipe, seed=0)
    return projection.save(folder / f"without-{left_out}", {"name": f"without-{left_out}", "backbone_id": embedder.backbone_id})


def measure(left_out: str, tested: int, margin: dict, folder: Path) -> dict:
    """Shares right / wrong / none for each way of enrolling and naming, with each detector."""
    rng = np.random.default_rng(0)
    projection = projection_without(left_out, folder)

    def recognizer(name, kind="faceboxes", open_saved=False):
        make = animeface.Recognizer.open if open_saved else animeface.Recognizer
        return make(folder / left_out / name, backbone=BACKBONE, cascade=CASCADE, detector=kind,
                    projection=projection, progress=False, **margin)

    crops_enrolled = recognizer("crops")  # crops enrolled whole: no detector runs, so once for both
    from_pictures = {kind: recognizer(f"pictures-{kind}", kind) for kind in DETECTORS}
    tests = []
    for folder_ in sorted(p for p in (SHARED / "faces" / left_out).iterdir() if p.is_dir())[:CHARACTERS]:
        files = sorted(folder_.iterdir())
        crops = [load_image(f) for f in files[:ENROLLED]]
        pictures = [pasted(crop, rng) for crop in crops]
        crops_enrolled.enroll(folder_.name, crops, faces="whole")
        for kind in DETECTORS:
            from_pictures[kind].enroll(folder_.name, pictures)
        tests += [(folder_.name, load_image(f)) for f in files[ENROLLED:ENROLLED + tested]]
    crops_enrolled.save()
    from_crops = {kind: recognizer("crops", kind, open_saved=True) for kind in DETECTORS}
    ways = {"crops -> crops": [], **{f"{w} -> pictures, {kind}": [] for w in ("crops", "pictures") for kind in from_crops}}
    for name, crop in tests:
        picture = pasted(crop, rng)
        ways["crops -> crops"].append(verdict(from_crops["cascade"].identify(crop, faces="whole"), name))
        for kind in DETECTORS:
            ways[f"crops -> pictures, {kind}"].append(verdict(from_crops[kind].identify(picture), name))
            ways[f"pictures -> pictures, {kind}"].append(verdict(from_pictures[kind].identify(picture), name))
    return {way: {v: answers.count(v) / len(answers) for v in ("right", "wrong", "none")} for way, answers in ways.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tested", type=int, default=10, help="pictures named per character (default 10)")
    parser.add_argument("--margin", type=float, default=None, help="crop margin (default: the Recognizer's)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="training sets to leave out in turn")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("ANIMEFACE_DETECTOR", str(WEIGHTS))  # the shared weights, by the path users' downloads take
    margin = {} if args.margin is None else {"margin": args.margin}
    with tempfile.TemporaryDirectory() as tmp:
        results = {left_out: measure(left_out, args.tested, margin, Path(tmp)) for left_out in args.sets}
    print(f"\n{CHARACTERS} characters per left-out set, {ENROLLED} enrolled each, {args.tested} named each; "
          f"margin {args.margin if args.margin is not None else 'default'}\n")
    print("| left out | enrolled -> named | named right | wrong name | nothing named |")
    print("|---|---|---|---|---|")
    for left_out, ways in results.items():
        for way, shares in ways.items():
            print(f"| {left_out} | {way} | {shares['right']:.1%} | {shares['wrong']:.1%} | {shares['none']:.1%} |")


if __name__ == "__main__":
    main()
