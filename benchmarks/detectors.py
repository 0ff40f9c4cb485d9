"""The learned detector (FaceBoxes, with its framings) against the LBP cascade, side by side in one run.

For every full-picture set here it prints, per detector: labelled faces found (IoU >= 0.3 with
tests/face_boxes.json), boxes on no labelled face, the share of pictures with a face, boxes per
picture, and median and mean ms per picture. Then what each framing adds (faces found with the framing
switched off), how often each ran, and ms per picture at 640, 1280 and 2560 px for the learned
detector, its first pass alone, and the cascade, each picture timed by every detector in turn.
Sets:
  - labelled: ../shared/data/illustrations with tests/face_boxes.json;
  - close-ups: every 40th holoen20 face crop (a face that fills the picture; found = a box on its centre);
  - turned: the labelled pictures with one face, turned by 30, 60 and 90 degrees (found = a box
    centred within half the face's side of its centre; other boxes counted);
  - no-face: the picture's two real photos and one anime picture with no face (boxes only);
  - eyes covered: the labelled pictures with a dark band over each labelled face's eyes, as a
    blindfold or sunglasses hide them.

    PYTHONPATH=. python benchmarks/detectors.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from animeface.cascade import CascadeDetector  # noqa: E402
from animeface.detect import Detector  # noqa: E402
from animeface.faceboxes import FRAMINGS, turned  # noqa: E402
from animeface.io import load_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
WEIGHTS = SHARED / "models" / "faceboxes" / "FaceBoxes_epoch_90.pth"


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def labelled():
    truth = json.loads((ROOT / "tests" / "face_boxes.json").read_text())["boxes"]
    return [(load_image(SHARED / "illustrations" / name), boxes) for name, boxes in truth.items()]


def close_ups(step: int = 40):
    return [load_image(p) for p in sorted((SHARED / "faces" / "holoen20").glob("*/*"))[::step]]


def without(*framings):
    return [f for f in FRAMINGS if f not in framings]


def turned_pictures(angles=(30, 60, 90)):
    """The labelled pictures with one face, turned by each angle: (picture, face centre, face side)."""
    truth = json.loads((ROOT / "tests" / "face_boxes.json").read_text())["boxes"]
    out = []
    for name, boxes in truth.items():
        if len(boxes) == 1:
            (x, y, w, h), = boxes
            rgb = load_image(SHARED / "illustrations" / name)
            for angle in angles:
                picture, matrix = turned(rgb, angle)
                out.append((angle, picture, matrix @ (x + w / 2, y + h / 2, 1), w))
    return out


def eyes_covered(sets):
    """The labelled pictures with a dark band across each labelled face's eye line."""
    out = []
    for rgb, truth in sets:
        rgb = rgb.copy()
        for x, y, w, h in truth:
            rgb[max(int(y + 0.38 * h), 0):max(int(y + 0.62 * h), 0), max(int(x), 0):int(x + w)] = 20
        out.append((rgb, truth))
    return out


def tally(detector, sets):
    """Labelled faces found, boxes on no labelled face, labelled pictures with a box, boxes, and ms per picture."""
    found = false = with_face = boxes_total = 0
    ms = []
    for rgb, truth in sets:
        boxes, t = timed(detector, rgb)
        ms.append(t)
        found += sum(any(iou(b, t_) >= 0.3 for b in boxes) for t_ in truth)
        false += sum(not any(iou(b, t_) >= 0.3 for t_ in truth) for b in boxes)
        with_face += bool(boxes) and bool(truth)
        boxes_total += len(boxes)
    return found, false, with_face, boxes_total, ms


def timed(detector, rgb):
    start = time.perf_counter()
    boxes = detector.detect(rgb)
    return boxes, 1000 * (time.perf_counter() - start)


def main() -> None:
    detectors = {
        "faceboxes (default)": Detector(weights=WEIGHTS, cascade=CASCADE),
        "faceboxes, square pass alone": Detector(weights=WEIGHTS, framings=("square",), second_opinion=None),
        "cascade": Detector("cascade", cascade=CASCADE),
    }
    ablations = {
        "without fill": Detector(weights=WEIGHTS, cascade=CASCADE, framings=without("fill")),
        "without detail": Detector(weights=WEIGHTS, cascade=CASCADE, framings=without("detail")),
        "without turned": Detector(weights=WEIGHTS, cascade=CASCADE, framings=without("turned")),
        "without detail or cascade": Detector(weights=WEIGHTS, framings=("square", "fill"), second_opinion=None),
        "without cascade second opinion": Detector(weights=WEIGHTS, second_opinion=None),
        "cascade second opinion with its tilted passes": Detector(
            weights=WEIGHTS, second_opinion=CascadeDetector(CASCADE)),
        "without verifier": Detector(weights=WEIGHTS, cascade=CASCADE, verifier=None),
        "without the floor (best box from 0.1)": Detector(weights=WEIGHTS, cascade=CASCADE, floor=0.5),
    }
    sets = labelled()
    crops = close_ups()
    for d in {**detectors, **ablations}.values():  # warm: the network is compiled once per picture shape
        for rgb in [rgb for rgb, _ in sets] + crops:
            d.detect(rgb)
    default = detectors["faceboxes (default)"]._detector
    default.passes = dict.fromkeys(default.passes, 0)

    print("## Labelled illustrations (%d pictures, %d faces)\n" % (len(sets), sum(len(t) for _, t in sets)))
    print("| detector | faces found | false boxes | pictures with a face | boxes per picture | median ms | mean ms |")
    print("|---|---|---|---|---|---|---|")
    pictures = sum(1 for _, t in sets if t)
    for name, det in {**detectors, **ablations}.items():
        found, false, with_face, boxes_total, ms = tally(det, sets)
        print(f"| {name} | {found} | {false} | {with_face}/{pictures} | {boxes_total / len(sets):.2f} | "
              f"{statistics.median(ms):.0f} | {statistics.mean(ms):.0f} |")
    print(f"\nframings run by the default on these pictures: {default.passes}\n")

    print("## Eyes covered (the labelled pictures, a dark band over each labelled face's eyes)\n")
    print("| detector | faces found | false boxes | pictures with a face |")
    print("|---|---|---|---|")
    for name, det in {**detectors, "without verifier": ablations["without verifier"]}.items():
        found, false, with_face, _, _ = tally(det, eyes_covered(sets))
        print(f"| {name} | {found} | {false} | {with_face}/{pictures} |")
    print()

    print(f"## Close-ups ({len(crops)} holoen20 face crops)\n")
    print("| detector | found (box on the centre) | boxes per picture | median ms |")
    print("|---|---|---|---|")
    for name, det in detectors.items():
        hits = boxes_total = 0
        ms = []
        for rgb in crops:
            boxes, t = timed(det, rgb)
            ms.append(t)
            cy, cx = rgb.shape[0] / 2, rgb.shape[1] / 2
            hits += any(b.x <= cx <= b.x + b.w and b.y <= cy <= b.y + b.h for b in boxes)
            boxes_total += len(boxes)
        print(f"| {name} | {hits}/{len(crops)} | {boxes_total / len(crops):.2f} | {statistics.median(ms):.0f} |")

    spun = turned_pictures()
    print(f"\n## Turned pictures ({len(spun) // 3} one-face labelled pictures, each turned by 30, 60, 90 degrees)\n")
    print("| detector | found at 30 / 60 / 90 degrees | other boxes | median ms |")
    print("|---|---|---|---|")
    for name, det in {**detectors, "without turned": ablations["without turned"]}.items():
        hits = {30: 0, 60: 0, 90: 0}
        other = 0
        ms = []
        for angle, picture, (cx, cy), side in spun:
            boxes, t = timed(det, picture)
            ms.append(t)
            on_face = [abs(b.x + b.w / 2 - cx) < side / 2 and abs(b.y + b.h / 2 - cy) < side / 2 for b in boxes]
            hits[angle] += any(on_face)
            other += on_face.count(False)
        count = len(spun) // 3
        print(f"| {name} | {' / '.join(f'{hits[a]}/{count}' for a in hits)} | {other} | {statistics.median(ms):.0f} |")

    print("\n## ms per picture by size (labelled pictures rescaled, each timed by every detector in turn)\n")
    print("| long side px | " + " | ".join(detectors) + " | default / cascade |")
    print("|---|" + "---|" * (len(detectors) + 1))
    for side in (640, 1280, 2560):
        ms = {name: [] for name in detectors}
        for rgb, _ in sets:
            scale = side / max(rgb.shape[:2])
            img = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            for name, det in detectors.items():
                ms[name].append(timed(det, img)[1])
        medians = {name: statistics.median(v) for name, v in ms.items()}
        ratio = statistics.median(a / b for a, b in zip(ms["faceboxes (default)"], ms["cascade"]))
        print(f"| {side} | " + " | ".join(f"{medians[n]:.0f}" for n in detectors) + f" | {ratio:.2f} |")


if __name__ == "__main__":
    main()
