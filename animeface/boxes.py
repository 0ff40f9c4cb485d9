"""Face boxes and the non-maximum suppression that merges overlapping ones, for every detector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A face box in original-image pixels; unpacks as (x, y, w, h) and carries .score in [0, 1].

    angle: the turn (degrees, counter-clockwise) that sets the face upright, for a tilted or lying
    head found in a turned picture; its crop is cut turned by it (crop.crop_face)."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    angle: float = 0.0

    @classmethod
    def clipped(cls, x: float, y: float, w: float, h: float, width: int, height: int, score: float,
                angle: float = 0.0):
        """The box cut to a width x height picture, its edges rounded to whole pixels inside it;
        None when less than a pixel of it is left."""
        x0, y0 = round(max(x, 0)), round(max(y, 0))
        x1, y1 = round(min(x + w, width)), round(min(y + h, height))
        if x1 <= x0 or y1 <= y0:
            return None
        return cls(int(x0), int(y0), int(x1 - x0), int(y1 - y0), float(score), float(angle))

    def __iter__(self):
        return iter((self.x, self.y, self.w, self.h))

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return (self.x, self.y, self.w, self.h)[i]


def nms(rects: np.ndarray, scores: np.ndarray, max_iou: float) -> list[int]:
    """Indices of the boxes kept, best first: each drops later ones that overlap it by more than
    max_iou, or that lie mostly (70%) inside it."""
    order = list(np.argsort(-scores, kind="stable"))
    kept = []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [i for i in order if not _overlaps(rects[best], rects[i], max_iou)]
    return kept


def _overlaps(a, b, max_iou: float) -> bool:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    smaller = min(a[2] * a[3], b[2] * b[3])
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter > max_iou * union or inter > 0.7 * smaller


def same_place(a, b) -> bool:
    """Whether two boxes (x, y, w, h) of one picture frame the same face: either's centre lies in
    the other (a looser or a tighter box of it, another detector's, the whole crop it fills)."""
    def inside(p, q):
        cx, cy = p[0] + p[2] / 2, p[1] + p[3] / 2
        return q[0] <= cx <= q[0] + q[2] and q[1] <= cy <= q[1] + q[3]
    return inside(a, b) or inside(b, a)
