"""Detection benchmark: the plain cascade against each candidate improvement and the new default.

Two sets: the hand-labelled illustrations (tests/face_boxes.json, images in
../shared/data/illustrations) and a synthetic set built here, deterministic:
moeimouto10 face crops pasted into drawn backgrounds at several sizes and
rotations, some in grey, with known boxes. Prints precision, recall and
average precision at IoU 0.5, the share of pictures with a face found, boxes
per picture, median milliseconds per picture and the median of per-picture
time ratios to the plain cascade. All settings run on each picture in turn,
so timings are side by side on the same noisy machine. A last table times
the plain cascade and the new default with the labelled pictures rescaled to
several sizes, since the speed rule must hold whatever size users' pictures are.
Between them, close-ups (holoen20 face crops) show faces that fill the frame.

    PYTHONPATH=. python benchmarks/detection.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from animeface.detect import Detector
from animeface.io import load_image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
PLAIN = dict(scale_factor=1.1, min_neighbors=5, resolution=1.0, min_side=None, max_side=None, angles=(0,), pad=0, verify=False)

UPRIGHT = {**PLAIN, "scale_factor": 1.07, "min_neighbors": 4, "resolution": 0.6, "min_side": 400, "max_side": 1280}
CANDIDATES = {
    "plain cascade (author's settings)": PLAIN,
    "working size alone (0.6, 400..1280)": {**PLAIN, "resolution": 0.6, "min_side": 400, "max_side": 1280},
    "+ finer steps 1.07, 4 neighbours": UPRIGHT,
    "+ finer + rotations ±25": {**UPRIGHT, "angles": (0, -25, 25)},
    "+ finer + rotations ±20 ±40": {**UPRIGHT, "angles": (0, -20, 20, -40, 40)},
    "+ finer + framed pass for big faces": {**UPRIGHT, "pad": 0.08},
    "+ finer + CLAHE pass": {**UPRIGHT, "contrasts": ("equalize", "clahe")},
    "+ finer + verifier": {**UPRIGHT, "verify": True},
    "+ finer + loose (3 neighbours) + verifier": {**UPRIGHT, "min_neighbors": 3, "verify": True},
    "new default without verifier": {"verify": False},
    "new default": {},
}
SIZES = (640, 900, 1200, 1600, 2400)


def labelled_set():
    boxes = json.loads((ROOT / "tests" / "face_boxes.json").read_text())["boxes"]
    folder = SHARED / "illustrations"
    return [(name, load_image(folder / name), np.array(truth, dtype=float).reshape(-1, 4)) for name, truth in boxes.items()]


def close_up_set(step: int = 40):
    """Every step-th holoen20 face crop: faces that fill the frame, as in portraits and icons."""
    return [(path.name, load_image(path)) for path in sorted((SHARED / "faces" / "holoen20").glob("*/*"))[::step]]


def close_up_found(boxes, image) -> bool:
    """A close-up counts as found when a box holds the picture's centre."""
    cy, cx = image.shape[0] / 2, image.shape[1] / 2
    return any(b.x <= cx <= b.x + b.w and b.y <= cy <= b.y + b.h for b in boxes)


def synthetic_set(count: int = 48, seed: int = 0):
    """Face pictures pasted into drawn backgrounds at several sizes and rotations.

    The truth box is the face the plain cascade finds in the upright crop
    (crops where it finds no single face are skipped), scaled, and centred
    where the rotation carries the face's centre.
    """
    rng = np.random.default_rng(seed)
    faces = sorted((SHARED / "faces" / "moeimouto10").glob("*/*.png"))
    plain = Detector("cascade", cascade=CASCADE, **PLAIN)
    sizes = [(640, 480), (1280, 960), (2400, 1600)]
    out = []
    for n in range(count):
        width, height = sizes[n % len(sizes)]
        canvas = _background(rng, width, height)
        placed, truth = [], []
        for _ in range(int(rng.integers(1, 4))):
            crop = load_image(faces[int(rng.integers(len(faces)))])
            found = plain.detect(cv2.resize(crop, None, fx=2, fy=2))
            if len(found) != 1:
                continue
            fx, fy, fw, _ = (v / 2 for v in found[0])
            zoom = min(width, height) * float(rng.choice([0.05, 0.1, 0.2, 0.35])) / fw
            side = int(crop.shape[0] * zoom)
            if side >= min(width, height):
                continue
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            if any(_iou((x, y, side, side), p) > 0 for p in placed):
                continue
            angle = float(rng.choice([0, 0, 15, -15, 30, -30, 45]))
            matrix = _paste_rotated(canvas, cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA), x, y, angle)
            cx, cy = matrix @ np.array([(fx + fw / 2) * zoom, (fy + fw / 2) * zoom, 1.0])
            placed.append((x, y, side, side))
            truth.append((x + cx - fw * zoom / 2, y + cy - fw * zoom / 2, fw * zoom, fw * zoom))
        if n % 4 == 3:  # manga-like grey page
            canvas = np.repeat(cv2.cvtColor(canvas, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
        out.append((f"synthetic_{n:02d}", canvas, np.array(truth, dtype=float).reshape(-1, 4)))
    return out


def _background(rng, width, height):
    small = rng.integers(0, 256, size=(6, 8, 3)).astype(np.uint8)
    canvas = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(30):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(canvas, p1, int(rng.integers(10, width // 6)), colour, -1, cv2.LINE_AA)
        else:
            p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(canvas, p1, p2, colour, int(rng.integers(2, 12)), cv2.LINE_AA)
    return cv2.GaussianBlur(canvas, (0, 0), 1.5)


def _paste_rotated(canvas, face, x, y, angle):
    """Paste face rotated about its centre; returns the crop-to-crop rotation matrix."""
    side = face.shape[0]
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    rotated = cv2.warpAffine(face, matrix, (side, side))
    mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), matrix, (side, side)) > 127
    region = canvas[y : y + side, x : x + side]
    region[mask] = rotated[mask]
    return matrix


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def match(found, truth, threshold=0.5):
    """Per box (best first): whether it hits a not-yet-matched truth box at IoU >= threshold."""
    used, hits = set(), []
    for box in found:
        ious = [(_iou(box, t), j) for j, t in enumerate(truth) if j not in used]
        best = max(ious, default=(0.0, -1))
        hits.append(best[0] >= threshold)
        if best[0] >= threshold:
            used.add(best[1])
    return hits


def scores(results, dataset):
    """Precision, recall, AP at IoU 0.5; share of pictures with faces where one was found; boxes per picture."""
    scored, total_truth, found_any = [], 0, []
    for (name, _, truth), found in zip(dataset, results):
        hits = match(found, truth)
        scored += [(box.score, hit) for box, hit in zip(found, hits)]
        total_truth += len(truth)
        if len(truth):
            found_any.append(any(hits))
    scored.sort(key=lambda s: -s[0])
    tp = np.cumsum([hit for _, hit in scored]) if scored else np.zeros(1)
    precision_curve = tp / np.arange(1, len(tp) + 1)
    recall_curve = tp / max(total_truth, 1)
    ap = _average_precision(recall_curve, precision_curve) if scored else 0.0
    boxes = sum(len(r) for r in results)
    return dict(
        precision=(tp[-1] / boxes) if boxes else 0.0,
        recall=tp[-1] / max(total_truth, 1),
        ap=ap,
        with_face=float(np.mean(found_any)),
        boxes_per_picture=boxes / len(dataset),
    )


def _average_precision(recall, precision) -> float:
    """All-point interpolated AP (PASCAL VOC 2010 and later)."""
    r = np.concatenate([[0.0], recall, [recall[-1]]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def run(detectors, dataset):
    """Each detector on each picture in turn; results and milliseconds per picture."""
    results = {name: [] for name in detectors}
    times = {name: [] for name in detectors}
    for _, image, _ in dataset:
        for name, detector in detectors.items():
            start = time.perf_counter()
            results[name].append(detector.detect(image))
            times[name].append((time.perf_counter() - start) * 1000)
    return results, times


def time_by_size(detectors, dataset, sizes=SIZES):
    """Median ms per picture, and the median of per-picture ratios to the first detector,
    with every picture rescaled to each long side in turn."""
    rows = {}
    for side in sizes:
        scaled = []
        for name, image, truth in dataset:
            factor = side / max(image.shape[:2])
            interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            scaled.append((name, cv2.resize(image, None, fx=factor, fy=factor, interpolation=interpolation), truth))
        _, times = run(detectors, scaled)
        first = np.array(next(iter(times.values())))
        rows[side] = {name: (np.median(t), np.median(np.array(t) / first)) for name, t in times.items()}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names (or prefixes) of settings to run; the plain cascade always runs")
    args = parser.parse_args()
    plain, default = "plain cascade (author's settings)", "new default"
    chosen = {n: s for n, s in CANDIDATES.items() if n == plain or not args.only or any(n.startswith(o) for o in args.only)}
    detectors = {name: Detector("cascade", cascade=CASCADE, **settings) for name, settings in chosen.items()}
    labelled = labelled_set()
    for title, dataset in (("labelled illustrations", labelled), ("synthetic set", synthetic_set())):
        truth = sum(len(t) for _, _, t in dataset)
        print(f"\n{title}: {len(dataset)} pictures, {truth} faces")
        print(f"{'setting':44s} {'prec':>6s} {'recall':>6s} {'AP':>6s} {'w/face':>7s} {'box/pic':>7s} {'med ms':>7s} {'ratio':>6s}")
        results, times = run(detectors, dataset)
        for name in detectors:
            s = scores(results[name], dataset)
            ratio = np.median(np.array(times[name]) / np.array(times[plain]))
            print(
                f"{name:44s} {s['precision']:6.3f} {s['recall']:6.3f} {s['ap']:6.3f} {s['with_face']:7.1%}"
                f" {s['boxes_per_picture']:7.2f} {np.median(times[name]):7.1f} {ratio:6.2f}"
            )
    close_ups = close_up_set()
    print(f"\nclose-ups: {len(close_ups)} holoen20 face crops that the face fills; share with a box on the centre")
    for name, detector in detectors.items():
        found = np.mean([close_up_found(detector.detect(image), image) for _, image in close_ups])
        print(f"{name:44s} {found:7.1%}")
    pair = {name: detectors[name] for name in (plain, default) if name in detectors}
    print("\ntime by picture size: the labelled pictures rescaled to each long side")
    print(f"{'long side':>9s} " + " ".join(f"{name[:24]:>24s}" for name in pair) + "  (median ms, median ratio to plain)")
    for side, row in time_by_size(pair, labelled).items():
        print(f"{side:9d} " + " ".join(f"{row[n][0]:14.1f} ms {row[n][1]:5.2f}x" for n in pair))

if __name__ == "__main__":
    main()
