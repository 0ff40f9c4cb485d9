"""Find anime faces: the learned detector (FaceBoxes) by default, the LBP cascade as the fast mode.

Measured on full illustrations (benchmarks/detectors.py), the cascade needs large, open,
frontal eyes and finds no face in many pictures that FaceBoxes handles; it stays as the
detector the project started from, selectable by kind="cascade" (--detector cascade).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from .boxes import Box
from .io import ImageLike, load_image
from .models import DEFAULT_DETECTOR, DETECTORS

__all__ = ["Box", "DETECTORS", "Detector", "detect_faces", "draw_boxes"]


class Detector:
    """Face boxes in pictures, by the detector of this kind.

    kind: "faceboxes" (default) or "cascade". cascade: the cascade XML (else
    ANIMEFACE_CASCADE, else the download); weights: the FaceBoxes .pth (else
    ANIMEFACE_DETECTOR, else the download). Other keyword arguments go to that kind's
    detector (faceboxes.FaceBoxesDetector, cascade.CascadeDetector).
    """

    def __init__(self, kind: str = DEFAULT_DETECTOR, *, cascade: str | os.PathLike | None = None,
                 weights: str | os.PathLike | None = None, **settings):
        if kind not in DETECTORS:
            raise ValueError(f"detector kind must be one of {', '.join(DETECTORS)}, got {kind!r}")
        from .cascade import CascadeDetector

        self.kind = kind
        if kind == "cascade":
            self._detector = CascadeDetector(cascade, **settings)
        else:
            from .faceboxes import FaceBoxesDetector
            from .verifier import Verifier

            if "second_opinion" not in settings:  # upright only: tilted heads are the "turned" framing's
                settings["second_opinion"] = CascadeDetector(cascade, angles=(0,))
            if "verifier" not in settings:
                settings["verifier"] = Verifier()
            self._detector = FaceBoxesDetector(weights, **settings)
        self.path = self._detector.path

    def detect(self, image: ImageLike) -> list[Box]:
        """Face boxes in original-image pixels, best score first; scores lie in [0, 1]."""
        return self._detector.detect(load_image(image))


def draw_boxes(rgb: np.ndarray, boxes, labels=None) -> np.ndarray:
    """A copy of an RGB image with each box drawn (turned by its angle, if it has one) and captioned
    with its label or score."""
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    thickness = max(2, round(max(out.shape[:2]) / 400))
    font_scale = max(0.5, max(out.shape[:2]) / 1200)
    for i, box in enumerate(boxes):
        x, y, w, h = (int(v) for v in box)
        caption = labels[i] if labels is not None else f"{getattr(box, 'score', 1.0):.2f}"
        angle = getattr(box, "angle", 0.0)
        if angle:  # a face found turned: its square drawn turned as the face lies
            corners = cv2.boxPoints(((x + w / 2, y + h / 2), (w, h), -angle))
            cv2.polylines(out, [np.round(corners).astype(np.int32)], True, (255, 40, 40), thickness)
        else:
            cv2.rectangle(out, (x, y), (x + w, y + h), (255, 40, 40), thickness)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness // 2 + 1)
        top = max(y - th - base - 2, 0)
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 2), (255, 40, 40), -1)
        cv2.putText(out, caption, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness // 2 + 1, cv2.LINE_AA)
    return out


_default_detectors: dict[str, Detector] = {}


def detect_faces(image: ImageLike, kind: str = DEFAULT_DETECTOR) -> list[Box]:
    """Face boxes in an image, best score first, by the default detector of that kind."""
    if kind not in _default_detectors:
        _default_detectors[kind] = Detector(kind)
    return _default_detectors[kind].detect(image)
