"""Find anime faces with the LBP cascade (nagadomi/lbpcascade_animeface)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import models
from .errors import ModelError
from .io import ImageLike, load_image


@dataclass(frozen=True)
class Box:
    """A face box in original-image pixels; unpacks as (x, y, w, h) and carries .score in [0, 1]."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    def __iter__(self):
        return iter((self.x, self.y, self.w, self.h))

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return (self.x, self.y, self.w, self.h)[i]


def cascade_path(cascade: str | os.PathLike | None = None) -> Path:
    """The cascade to use: the argument, else ANIMEFACE_CASCADE, else the verified download."""
    chosen = cascade or os.environ.get("ANIMEFACE_CASCADE")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ModelError(f"cascade file {path} does not exist (from the argument or ANIMEFACE_CASCADE)")
        return path
    return models.fetch("lbpcascade_animeface")


class Detector:
    """The anime face cascade with its author's settings by default.

    Scores come from the cascade's final-stage weight (detectMultiScale3),
    squashed into [0, 1] with a logistic curve.
    """

    def __init__(self, cascade=None, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        self.path = cascade_path(cascade)
        self._cascade = cv2.CascadeClassifier(str(self.path))
        if self._cascade.empty():
            raise ModelError(f"{self.path}: OpenCV could not load this file as a cascade")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def detect(self, image: ImageLike) -> list[Box]:
        rgb = load_image(image)
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        rects, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        boxes = [Box(int(x), int(y), int(w), int(h), _squash(float(s))) for (x, y, w, h), s in zip(rects, np.ravel(weights))]
        return sorted(boxes, key=lambda b: -b.score)


def _squash(weight: float) -> float:
    return 1.0 / (1.0 + math.exp(-weight))


_default_detector: Detector | None = None


def default_detector() -> Detector:
    global _default_detector
    if _default_detector is None:
        _default_detector = Detector()
    return _default_detector


def detect_faces(image: ImageLike) -> list[Box]:
    """Face boxes in an image, best score first."""
    return default_detector().detect(image)
