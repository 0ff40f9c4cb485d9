"""Train the face verifier (cascades/face_verifier.npz) from ../shared/data faces.

Positives: the 64 px detector-style crops (faces/unlabeled64) and the holoen20
face crops, each with small shifts, zooms and mirror images, since cascade
boxes frame faces loosely. Negatives: windows of the holoen20 pictures away
from the face (hair, clothes, background) and corner windows of faces (an eye
or an ear alone is not a face). moeimouto10 is left out: the synthetic
detection benchmark pastes those faces. Seeded, so a rerun writes the same file.

    PYTHONPATH=. python benchmarks/train_verifier.py [--check]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from animeface.verifier import WEIGHTS_PATH, crop_features

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
HOLOEN_PER_CHARACTER = 40


def gray(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def window(image: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
    """A square window centred at (cx, cy), padded by edge replication where it leaves the image."""
    half = size / 2
    matrix = np.float32([[1, 0, half - cx], [0, 1, half - cy]])
    side = max(int(round(size)), 8)
    return cv2.warpAffine(image, matrix, (side, side), borderMode=cv2.BORDER_REPLICATE)


def face_samples(image: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """The face with small random shifts and zooms, half of them mirrored."""
    side = image.shape[0]
    out = []
    for i in range(count):
        size = side * rng.uniform(0.85, 1.15)
        cx, cy = side / 2 + rng.uniform(-0.08, 0.08) * side, side / 2 + rng.uniform(-0.08, 0.08) * side
        crop = window(image, cx, cy, size)
        out.append(cv2.flip(crop, 1) if i % 2 else crop)
    return out


def non_face_samples(image: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Windows that miss the face: small ones near the edges of a face picture."""
    side = image.shape[0]
    out = []
    for _ in range(count):
        size = side * rng.uniform(0.25, 0.5)
        angle = rng.uniform(0, 2 * np.pi)
        reach = side * rng.uniform(0.3, 0.5)
        out.append(window(image, side / 2 + reach * np.cos(angle), side / 2 + reach * np.sin(angle), size))
    return out


def build_set(rng: np.random.Generator):
    positives, negatives = [], []
    for path in sorted((FACES / "unlabeled64").glob("*.png")):
        image = gray(path)
        positives += face_samples(image, rng, 2)
        negatives += non_face_samples(image, rng, 1)
    for folder in sorted(p for p in (FACES / "holoen20").iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*"))[:HOLOEN_PER_CHARACTER]:
            image = gray(path)
            positives += face_samples(image, rng, 2)
            negatives += non_face_samples(image, rng, 4)
    x = np.concatenate([crop_features(positives), crop_features(negatives)])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--check", action="store_true", help="only report held-out accuracy, write nothing")
    args = parser.parse_args()

    x, y = build_set(np.random.default_rng(0))
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    model = LogisticRegression(C=0.1, max_iter=3000).fit((x_train - mean) / scale, y_train)
    accuracy = model.score((x_test - mean) / scale, y_test)
    print(f"{int(y.sum())} face and {int((1 - y).sum())} non-face crops; held-out accuracy {accuracy:.3f}")
    if args.check:
        return
    np.savez(
        args.out,
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        coef=model.coef_[0].astype(np.float32),
        intercept=np.float32(model.intercept_[0]),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); update the sha256 and figures in its card, "
          f"{args.out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
