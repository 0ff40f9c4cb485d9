"""Find anime faces with the LBP cascade (nagadomi/lbpcascade_animeface).

The cascade alone, at its author's settings, misses tilted heads, small faces
in big pictures, faces that fill the frame and faces its coarse scale steps
skip. CascadeDetector adds, each configurable: a finer scale step on a reduced
working size (which also shrinks huge pictures), a sweep of rotations, a
framed pass for big faces, extra contrast preparations, a small verifier for
the boxes, and non-maximum suppression to merge it all. The passes are sized
so that the whole costs less than the plain cascade on the same picture."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from . import models
from .boxes import Box, nms
from .errors import ModelError
from .verifier import Verifier


def cascade_path(cascade: str | os.PathLike | None = None) -> Path:
    """The cascade to use: the argument, else ANIMEFACE_CASCADE, else the verified download."""
    chosen = cascade or os.environ.get("ANIMEFACE_CASCADE")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ModelError(f"cascade file {path} does not exist (from the argument or ANIMEFACE_CASCADE)")
        return path
    return models.fetch("lbpcascade_animeface")


def _load_cascade(path: Path) -> cv2.CascadeClassifier:
    """The cascade in path; a file that is not one (empty, damaged, another kind of XML) is a ModelError."""
    cascade = cv2.CascadeClassifier()
    try:
        loaded = cascade.load(str(path)) and not cascade.empty()
    except cv2.error:
        loaded = False
    if not loaded:
        raise ModelError(f"{path}: not a cascade file OpenCV can load (empty, damaged or another kind of file); "
                         "point ANIMEFACE_CASCADE at lbpcascade_animeface.xml")
    return cascade


CONTRASTS = ("equalize", "clahe")


class CascadeDetector:
    """The anime face cascade plus the passes that raise its recall.

    scale_factor, min_neighbors, min_size: the cascade's own settings, in
        working-size pixels (the author's are 1.1, 5 and 24). A finer scale step
        than the author's finds faces his pyramid steps over.
    resolution: the share of a picture's own resolution to search at. Below 1
        it skips faces under min_size / resolution pixels, which pays for the
        finer pyramid and the extra passes; min_side and max_side bound the result.
    min_side: never search a picture whose long side is smaller than this, so
        that faces in small pictures still reach the 24 px window; None: no bound.
    max_side: never search a picture whose long side is larger than this (speed);
        None: no bound.
    angles: rotations in degrees to run the cascade on; boxes map back upright.
    tilted_min_size: the smallest face the rotated passes look for, in working-size
        pixels; tilted heads in illustrations are rarely tiny, and each rotated
        pass runs on a copy shrunk to match, so it costs a fraction of the upright one.
    pad: a pass for faces that fill the frame or are cut by its edge: the picture
        with a grey border of this share of its long side on every side, searched
        for faces of at least pad_min_face times its short side. 0 turns it off.
    contrasts: grey-level preparations, each a set of passes: "equalize"
        (equalizeHist), "clahe".
    verify: keep only boxes the face verifier accepts at verify_threshold; the
        score is then the verifier's probability.
    nms_iou: boxes overlapping a better one by more than this are merged away.

    CascadeDetector(cascade, scale_factor=1.1, min_neighbors=5, resolution=1, min_side=None,
    max_side=None, angles=(0,), pad=0, verify=False) is the plain cascade at its
    author's settings. benchmarks/detection.py measures each pass against it.
    """

    def __init__(
        self,
        cascade=None,
        scale_factor: float = 1.07,
        min_neighbors: int = 4,
        min_size: int = 24,
        *,
        resolution: float = 0.6,
        min_side: int | None = 400,
        max_side: int | None = 1280,
        angles=(0, -25, 25),
        tilted_min_size: int = 80,
        pad: float = 0.08,
        pad_min_face: float = 0.25,
        contrasts=("equalize",),
        verify: bool = True,
        verify_threshold: float = 0.5,
        nms_iou: float = 0.3,
    ):
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be above 1, got {scale_factor}")
        if min_neighbors < 0 or min_size < 1:
            raise ValueError(f"min_neighbors must be >= 0 and min_size >= 1, got {min_neighbors} and {min_size}")
        if resolution <= 0:
            raise ValueError(f"resolution must be above 0, got {resolution}")
        if max_side is not None and min_side is not None and min_side > max_side:
            raise ValueError(f"min_side ({min_side}) must not exceed max_side ({max_side})")
        unknown = set(contrasts) - set(CONTRASTS)
        if unknown or not contrasts:
            raise ValueError(f"contrasts must be a non-empty selection of {CONTRASTS}, got {contrasts}")
        if not angles:
            raise ValueError("angles must hold at least one rotation, e.g. (0,)")
        self.path = cascade_path(cascade)
        self._cascade = _load_cascade(self.path)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.resolution = resolution
        self.min_side = min_side
        self.max_side = max_side
        self.angles = tuple(angles)
        self.tilted_min_size = max(tilted_min_size, min_size)
        self.pad = pad
        self.pad_min_face = pad_min_face
        self.contrasts = tuple(contrasts)
        self.verify_threshold = verify_threshold
        self.nms_iou = nms_iou
        self._verifier = Verifier() if verify else None

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes in an RGB picture's pixels, best score first."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = self._working_scale(max(gray.shape))
        gray = _resized(gray, scale)

        rects, scores = [], []
        for contrast in self.contrasts:
            prepared = _prepare(gray, contrast)
            for angle in self.angles:
                found, weights = self._search(prepared, self.tilted_min_size if angle else self.min_size, angle)
                rects += found
                scores += weights
            if self.pad:
                min_face = max(self.min_size, self.pad_min_face * min(gray.shape))
                found, weights = self._search(prepared, min_face, 0, border=self.pad * max(gray.shape))
                rects += found
                scores += weights
        if not rects:
            return []
        rects = np.asarray(rects, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        if self._verifier is not None:
            scores = self._verifier.probabilities(gray, rects)
            keep = scores >= self.verify_threshold
            rects, scores = rects[keep], scores[keep]
        height, width = rgb.shape[:2]
        boxes = []
        for i in nms(rects, scores, self.nms_iou):
            x, y, w, h = rects[i]
            box = Box.clipped(x / scale, y / scale, w / scale, h / scale, width, height, scores[i])
            if box is not None:
                boxes.append(box)
        return boxes

    def _working_scale(self, long_side: int) -> float:
        side = long_side * self.resolution
        if self.min_side is not None:
            side = max(side, self.min_side)
        if self.max_side is not None:
            side = min(side, self.max_side)
        return side / long_side

    def _search(self, gray: np.ndarray, min_face: float, angle: float, border: float = 0.0):
        """Boxes (x, y, w, h) in gray's pixels of faces min_face pixels and up, and their squashed
        cascade weights, with the picture turned by angle degrees and framed by a grey border.

        A search for faces larger than the cascade's min_size runs on a copy shrunk
        until the two meet: the same search, on far fewer pixels.
        """
        shrink = min(1.0, self.min_size / min_face)
        gray = _resized(gray, shrink)
        border = int(round(border * shrink))
        if border:
            gray = cv2.copyMakeBorder(gray, border, border, border, border, cv2.BORDER_CONSTANT, value=128)
        inverse = None
        if angle:
            gray, inverse = _rotate(gray, angle)
        found, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        rects, scores = [], []
        for (x, y, w, h), weight in zip(found, np.ravel(weights)):
            if inverse is not None:
                cx, cy = inverse @ np.array([x + w / 2, y + h / 2, 1.0])
                x, y = cx - w / 2, cy - h / 2
            rects.append(((x - border) / shrink, (y - border) / shrink, w / shrink, h / shrink))
            scores.append(_squash(float(weight)))
        return rects, scores


def _resized(gray: np.ndarray, scale: float) -> np.ndarray:
    """gray scaled by scale (at least 1 px a side); itself when scale is 1."""
    if scale == 1.0:
        return gray
    size = (max(round(gray.shape[1] * scale), 1), max(round(gray.shape[0] * scale), 1))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _prepare(gray: np.ndarray, contrast: str) -> np.ndarray:
    if contrast == "clahe":
        return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
    return cv2.equalizeHist(gray)


def _rotate(gray: np.ndarray, angle: float):
    """The image rotated by angle degrees on a canvas that holds all of it, and the map back."""
    height, width = gray.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_width, new_height = int(height * sin + width * cos), int(height * cos + width * sin)
    matrix[0, 2] += new_width / 2 - width / 2
    matrix[1, 2] += new_height / 2 - height / 2
    rotated = cv2.warpAffine(gray, matrix, (new_width, new_height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return rotated, cv2.invertAffineTransform(matrix)


def _squash(weight: float) -> float:
    return 1.0 / (1.0 + math.exp(-weight))
