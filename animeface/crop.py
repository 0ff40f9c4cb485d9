"""Cut a face out for the embedder: widen the box, square it, pad past the border, resize."""

from __future__ import annotations

import cv2
import numpy as np

#: Widen each side of the detector's box by this share of its size: the cascade
#: box is tight on the eyes, and hair colour and shape are what tell characters apart.
DEFAULT_MARGIN = 0.25
#: Side of the face thumbnails pages show (the cluster contact sheet, the web page's gallery).
THUMBNAIL_SIDE = 96


def crop_face(rgb: np.ndarray, box, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """A size x size RGB crop centred on box, padded by edge replication where it leaves the image;
    turned upright by the box's angle, if it has one."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = getattr(box, "angle", 0.0)
    if angle:
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        matrix[:, 2] += side / 2 - cx, side / 2 - cy
        square = round(side)
        return resize_square(cv2.warpAffine(rgb, matrix, (square, square), borderMode=cv2.BORDER_REPLICATE), size)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + int(round(side)), y0 + int(round(side))
    H, W = rgb.shape[:2]
    pad = max(0, -x0, -y0, x1 - W, y1 - H)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return resize_square(rgb[y0:y1, x0:x1], size)


def whole_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole picture as one face: centre-padded to a square, then resized."""
    H, W = rgb.shape[:2]
    side = max(H, W)
    top, left = (side - H) // 2, (side - W) // 2
    squared = cv2.copyMakeBorder(rgb, top, side - H - top, left, side - W - left, cv2.BORDER_REPLICATE)
    return resize_square(squared, size)


def thumbnail_jpeg(face: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes:
    """A small JPEG of a square RGB face crop, `side` pixels a side, for a page to show."""
    small = resize_square(face, side)
    return cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(rgb, (size, size), interpolation=interp)
