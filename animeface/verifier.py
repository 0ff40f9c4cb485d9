"""A cheap second opinion on cascade boxes: is this crop an anime face?

HOG features of a 32x32 equalised grayscale crop and a logistic regression, trained by
benchmarks/train_verifier.py on the shared face crops against non-face crops.
It lets the cascade run with looser settings (more faces found) while the
extra false boxes are thrown away. Weights live in cascades/face_verifier.npz, plain
arrays, loaded without pickle.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np

from .errors import ModelError

CROP_SIZE = 32
WEIGHTS_PATH = Path(str(files("animeface.cascades") / "face_verifier.npz"))

_HOG = cv2.HOGDescriptor((CROP_SIZE, CROP_SIZE), (16, 16), (8, 8), (8, 8), 9)


def crop_features(gray_crops: list[np.ndarray]) -> np.ndarray:
    """HOG vectors (one row per crop) for grayscale crops of any size.

    Each crop is equalised on its own, so that a face reads the same on a
    bright page as on a dark one.
    """
    rows = []
    for crop in gray_crops:
        small = cv2.equalizeHist(cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA))
        rows.append(_HOG.compute(small).ravel())
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)


def box_crops(gray: np.ndarray, boxes) -> list[np.ndarray]:
    """The pixels under each (x, y, w, h) box; parts outside the image are mid-grey,
    as the cascade's grey border showed them."""
    height, width = gray.shape[:2]
    crops = []
    for x, y, w, h in boxes:
        x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
        crop = np.full((max(y1 - y0, 1), max(x1 - x0, 1)), 128, np.uint8)
        top, left, bottom, right = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
        if bottom > top and right > left:
            crop[top - y0 : bottom - y0, left - x0 : right - x0] = gray[top:bottom, left:right]
        crops.append(crop)
    return crops


class Verifier:
    """Face probability for boxes in a grayscale image."""

    def __init__(self, path: str | Path = WEIGHTS_PATH):
        try:
            with np.load(path, allow_pickle=False) as weights:
                self.mean = weights["mean"]
                self.scale = weights["scale"]
                self.coef = weights["coef"]
                self.intercept = float(weights["intercept"])
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: cannot load the face verifier weights ({exc})") from exc

    def probabilities(self, gray: np.ndarray, boxes) -> np.ndarray:
        """Probability in [0, 1] that each box holds a face."""
        if len(boxes) == 0:
            return np.zeros(0)
        features = (crop_features(box_crops(gray, boxes)) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(features @ self.coef + self.intercept)))
