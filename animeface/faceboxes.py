"""FaceBoxes (Zhang et al. 2017) trained on anime faces: a small learned face detector.

The network is rebuilt in Keras from the published PyTorch weights (read by pth.py,
no PyTorch needed), then converted to OpenVINO and cached by the weights' sha256, like
the embedder (runtime.py). It takes uint8 RGB pictures of any size and returns, per
anchor, a face probability and a box; anchors and box decoding follow the reference
implementation (FaceBoxes.PyTorch: prior_box.py, box_utils.decode).
"""

from __future__ import annotations

import functools
import os
import sys
from itertools import product
from pathlib import Path

import cv2
import numpy as np

from . import models, runtime
from .boxes import Box, nms, same_place
from .errors import ModelError
from .pth import read_state_dict
from .quiet import native_stderr_silenced

ENV = "ANIMEFACE_DETECTOR"
MANIFEST_NAME = "faceboxes_anime"
#: The colour the network was trained to see as zero (BGR), subtracted from every pixel.
MEAN_BGR = (104.0, 117.0, 123.0)
#: Anchor sizes per detection layer, and the layers' strides (the reference config).
MIN_SIZES = ((32, 64, 128), (256,), (512,))
STEPS = (32, 64, 128)
#: The small anchors are tiled densely: their centres' offsets within a cell, on each axis.
DENSE_OFFSETS = {32: (0, 0.25, 0.5, 0.75), 64: (0, 0.5)}
VARIANCES = (0.1, 0.2)
#: Bumped whenever the conversion changes what a cached network computes.
CONVERSION_VERSION = 1
BN_EPSILON = 1e-5
FRAMINGS = ("square", "fill", "detail", "turned")
#: Each framing's scale against the square pass (the picture's long side at `side`).
FRAMING_SCALES = {"square": 1.0, "fill": 0.5, "detail": 2.0}
#: The "detail" canvas's sides are rounded up to a multiple of this, so that a folder of pictures
#: of every aspect needs at most seven compiled detail shapes (each holds its own buffers: 256 px steps, up to 15
#: shapes, took 1955 MiB against 1487 detecting with two threads, at the same speed).
DETAIL_STEP = 512
#: The "turned" framing's rotations (degrees, counter-clockwise): heads tilted or lying sideways.
TURNS = (-90, -45, 45, 90)
#: A FaceBoxes box against the cascade-framed box of the same face: (width, height) ratios, then the
#: shift of its centre (x, y) in those boxes' sides. Medians over the faces of tests/face_boxes.json
#: (hand-checked cascade framing) that FaceBoxes found.
BOX_TO_CASCADE = ((1.25, 1.29), (0.017, -0.218))
#: The verifier's probability a box must reach: one the network is unsure of, and one kept by the floor alone.
VERIFIED, FLOOR_VERIFIED = 0.5, 0.9


def weights_path(path: str | os.PathLike | None = None) -> Path:
    """The weights to use: the argument, else ANIMEFACE_DETECTOR, else the verified download."""
    chosen = path or os.environ.get(ENV)
    if chosen:
        chosen = Path(chosen).expanduser()
        if not chosen.is_file():
            raise ModelError(f"detector weights {chosen} do not exist (from the argument or {ENV}); point {ENV} "
                             "at FaceBoxes_epoch_90.pth")
        return chosen
    return models.fetch(MANIFEST_NAME)


class FaceBoxes:
    """The detector network: batches of same-sized uint8 RGB pictures in, (boxes, scores) out."""

    def __init__(self, weights: str | os.PathLike | None = None, precision: str = "auto"):
        self.path = weights_path(weights)
        self.sha256 = _sha256(self.path)
        self.precision = precision
        self._requests = runtime.Requests()
        self.folder = runtime.cache_folder(["faceboxes", self.sha256, CONVERSION_VERSION])
        self._compiled()  # a bad weights file is reported now, not at the first picture

    def _compiled(self, shape: tuple[int, ...] | None = None):
        return runtime.compiled(self.folder, self.precision, lambda: convert(self.path, self.sha256, self.folder),
                                shape)

    def __call__(self, pictures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (n, h, w, 3) uint8 RGB: boxes (n, anchors, 4) as x0, y0, x1, y1 in pixels, and face scores.

        The network is compiled for each input shape it sees: feed it few shapes (frame() makes
        at most eight)."""
        pictures = np.ascontiguousarray(pictures, np.uint8)
        loc, scores = self._requests.infer(self._compiled(pictures.shape), pictures)
        height, width = pictures.shape[1:3]
        boxes = decode(loc, priors(height, width)) * np.array([width, height, width, height], np.float32)
        return boxes, scores


@functools.lru_cache(maxsize=None)
def _sha256(path: Path) -> str:
    return models.sha256_file(path)


@functools.lru_cache(maxsize=64)
def priors(height: int, width: int) -> np.ndarray:
    """The anchors (cx, cy, w, h), relative to the picture, in the order the network predicts them."""
    anchors = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        for i, j in product(range(-(-height // step)), range(-(-width // step))):
            for size in sizes:
                dense = DENSE_OFFSETS.get(size, (0.5,))
                for dy, dx in product(dense, dense):
                    anchors.append(((j + dx) * step / width, (i + dy) * step / height, size / width, size / height))
    return np.asarray(anchors, np.float32)


def decode(loc: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Predicted offsets to boxes (x0, y0, x1, y1), relative to the picture."""
    centre = anchors[:, :2] + loc[..., :2] * VARIANCES[0] * anchors[:, 2:]
    size = anchors[:, 2:] * np.exp(np.minimum(loc[..., 2:] * VARIANCES[1], 10.0))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)


def convert(path: Path, sha256: str, folder: Path) -> None:
    """Build the network in Keras from the weights file; runtime converts and caches it."""
    state = read_state_dict(path, ENV)
    print("animeface: preparing the face detector, once (converting FaceBoxes; a few seconds)",
          file=sys.stderr, flush=True)
    with native_stderr_silenced():
        function = _keras_network(state, path)
    runtime.save_converted(function, folder, {"weights_sha256": sha256, "conversion_version": CONVERSION_VERSION})


def _keras_network(state: dict[str, np.ndarray], path: Path):
    """A tf.function from uint8 RGB pictures to (offsets, face probabilities) per anchor."""
    import keras
    import tensorflow as tf

    used = set()

    def tensor(name: str, shape: tuple) -> np.ndarray:
        if name not in state:
            raise ModelError(f"{path}: {name} is missing; not the FaceBoxes weights (check {ENV})")
        value = state[name]
        if value.shape != shape or value.dtype != np.float32 or not np.isfinite(value).all():
            raise ModelError(f"{path}: {name} has shape {value.shape} ({value.dtype}) where FaceBoxes has {shape} "
                             f"(float32, finite); not the FaceBoxes weights (check {ENV})")
        used.add(name)
        return value

    def conv(x, name, filters, kernel, stride=1, padding=0, bias=False):
        in_channels = x.shape[-1]
        weight = tensor(f"{name}.weight", (filters, in_channels, kernel, kernel)).transpose(2, 3, 1, 0)
        if padding:
            x = keras.layers.ZeroPadding2D(padding)(x)
        layer = keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=bias)
        out = layer(x)
        layer.set_weights([weight, tensor(f"{name}.bias", (filters,))] if bias else [weight])
        return out

    def batch_norm(x, name):
        n = x.shape[-1]
        layer = keras.layers.BatchNormalization(epsilon=BN_EPSILON)
        out = layer(x)
        layer.set_weights([tensor(f"{name}.{k}", (n,)) for k in ("weight", "bias", "running_mean", "running_var")])
        return out

    def basic(x, name, filters, kernel, stride=1, padding=0):
        return keras.layers.ReLU()(batch_norm(conv(x, f"{name}.conv", filters, kernel, stride, padding), f"{name}.bn"))

    def crelu(x, name, filters, kernel, stride, padding):
        x = batch_norm(conv(x, f"{name}.conv", filters, kernel, stride, padding), f"{name}.bn")
        return keras.layers.ReLU()(keras.layers.Concatenate()([x, keras.layers.Lambda(lambda t: -t)(x)]))

    def max_pool(x):  # PyTorch's padding=1 pads with -inf; after a ReLU, zeros are the same
        return keras.layers.MaxPooling2D(3, 2)(keras.layers.ZeroPadding2D(1)(x))

    def inception(x, name):
        pooled = keras.layers.AveragePooling2D(3, 1)(keras.layers.ZeroPadding2D(1)(x))  # zeros counted, as PyTorch
        return keras.layers.Concatenate()([
            basic(x, f"{name}.branch1x1", 32, 1),
            basic(pooled, f"{name}.branch1x1_2", 32, 1),
            basic(basic(x, f"{name}.branch3x3_reduce", 24, 1), f"{name}.branch3x3", 32, 3, padding=1),
            basic(basic(basic(x, f"{name}.branch3x3_reduce_2", 24, 1), f"{name}.branch3x3_2", 32, 3, padding=1),
                  f"{name}.branch3x3_3", 32, 3, padding=1),
        ])

    keras.backend.clear_session()
    pictures = keras.Input((None, None, 3))
    x = crelu(pictures, "conv1", 24, 7, 4, 3)
    x = max_pool(x)
    x = crelu(x, "conv2", 64, 5, 2, 2)
    x = max_pool(x)
    for i in (1, 2, 3):
        x = inception(x, f"inception{i}")
    sources = [x]
    x = basic(basic(x, "conv3_1", 128, 1), "conv3_2", 256, 3, 2, 1)
    sources.append(x)
    x = basic(basic(x, "conv4_1", 128, 1), "conv4_2", 256, 3, 2, 1)
    sources.append(x)
    anchors_per_cell = [sum(len(DENSE_OFFSETS.get(s, (0.5,))) ** 2 for s in sizes) for sizes in MIN_SIZES]
    heads = []
    for k, (source, count) in enumerate(zip(sources, anchors_per_cell)):
        heads += [conv(source, f"loc.{k}", count * 4, 3, padding=1, bias=True),
                  conv(source, f"conf.{k}", count * 2, 3, padding=1, bias=True)]
    model = keras.Model(pictures, heads)
    unused = {k for k in state if not k.endswith("num_batches_tracked")} - used
    if unused:
        raise ModelError(f"{path}: holds tensors FaceBoxes does not have ({', '.join(sorted(unused)[:3])}); "
                         f"not the FaceBoxes weights (check {ENV})")
    mean = tf.constant(MEAN_BGR[::-1], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def detect(batch):
        rgb = tf.cast(batch, tf.float32) - mean
        heads = model(rgb[..., ::-1], training=False)  # the network was trained on BGR
        n = tf.shape(batch)[0]
        loc = tf.concat([tf.reshape(h, [n, -1, 4]) for h in heads[0::2]], axis=1)
        conf = tf.concat([tf.reshape(h, [n, -1, 2]) for h in heads[1::2]], axis=1)
        return loc, tf.nn.softmax(conf, axis=-1)[..., 1]

    return detect


class FaceBoxesDetector:
    """Anime faces found by FaceBoxes in up to three framings of a picture, merged by one NMS.

    - "square": the picture padded to a square with the mean colour, its long side at `side`;
    - "fill": the same square at half size on that canvas, for faces that fill the frame
      (the network's largest anchors are half the canvas);
    - "detail": the picture at its own aspect, its long side at twice `side`, for small faces:
      the network finds faces well from about 150 px up, which in a picture with many
      characters the square pass shrinks (or leaves) below that;
    - "turned": the square pass on the picture turned by each of TURNS, for tilted and lying heads;
      its boxes carry the turn (`Box.angle`) that sets the face upright for its crop.
    The extra framings run only when they can change the answer: "fill" when the square pass
    finds no face scoring `confident`; "detail" when a face it found is smaller than
    `small_face` canvas pixels (others of that size may have been missed), or when neither
    found one in a picture larger than `side` (a small one is a close-up, which "fill" is for);
    "turned" when no other framing found a face scoring `confident`.
    Boxes are kept at `threshold` or above (0.3 and 0.7 each found fewer labelled faces than 0.5);
    when none reaches it, the best box is kept from `floor` up (the rule the detector's own
    measurements used: one face is likelier than none in a picture given to a face recognizer).

    verifier: a verifier.Verifier that must also accept a box scoring below `verify_below`
    (measured on the labelled illustrations: it removed a false box on a real photo and no face),
    and be sure of (FLOOR_VERIFIED) a box kept by the floor alone: on 240 close-ups, 9 faces rested on the
    floor (scores 0.11-0.43), 8 of them verified at 0.99 or more; the one floor box on a picture
    with no face scored 0.36 and was verified at 0.71.
    Boxes the network is sure of are kept whatever it says: it was trained on the frontal faces the
    cascade finds, and would veto the unusual faces this network is for. For the same reason it never
    vetoes the picture's best box at `threshold` or above: it reads eyes, and a face whose eyes are
    hidden (a blindfold, sunglasses, hair) scores near 0 with it (eyes covered by a dark band on the
    labelled illustrations: 16 faces found and 17 of 23 pictures with a box, against 7 and 8 when it
    could veto the best box; the pictures as drawn lost no face and gained no false box).

    second_opinion: a cascade.CascadeDetector, run where small faces were found or no sure one
    (after "fill"); its boxes that overlap no FaceBoxes box are added. Small frontal faces
    in crowded pictures are where the cascade still finds faces this network misses.

    Boxes come out framed as the cascade frames a face (tight on the eyes, square), the framing
    the embedder's crops were made for: FaceBoxes' own boxes are taller and reach higher
    (BOX_TO_CASCADE, measured on the labelled illustrations).
    """

    def __init__(self, weights=None, *, side: int = 1024, framings=FRAMINGS, confident: float = 0.5,
                 small_face: int = 192, threshold: float = 0.5, floor: float = 0.1,
                 nms_iou: float = 0.3, verifier=None, verify_below: float = 0.9, second_opinion=None):
        unknown = set(framings) - set(FRAMINGS)
        if unknown or "square" not in framings:
            raise ValueError(f"framings must include 'square' and be among {', '.join(FRAMINGS)}; got {framings}")
        if side < 128 or side % 32:
            raise ValueError(f"side must be a multiple of 32 of at least 128, got {side}")
        for name, value in (("confident", confident), ("threshold", threshold), ("floor", floor)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        self.network = FaceBoxes(weights)
        self.path = self.network.path
        self.side, self.framings, self.small_face = side, tuple(framings), small_face
        self.confident, self.threshold, self.floor = confident, threshold, min(floor, threshold)
        self.nms_iou = nms_iou
        self.verifier, self.verify_below = verifier, verify_below
        self.second_opinion = second_opinion
        #: How many times each framing ran, for benchmarks/detectors.py.
        self.passes = dict.fromkeys(FRAMINGS + ("cascade",), 0)

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes in an RGB picture's pixels, best score first."""
        boxes, scores, scale = self._pass(rgb, "square")
        sure = scores >= self.confident
        small = sure.any() and boxes[sure, 2:].max(axis=1).min() * scale < self.small_face
        if "fill" in self.framings and not sure.any():
            boxes, scores = self._more(boxes, scores, rgb, "fill")
        none_sure = not (scores >= self.confident).any()
        crowded = small or none_sure
        if "detail" in self.framings and (small or (none_sure and max(rgb.shape[:2]) > self.side)):
            boxes, scores = self._more(boxes, scores, rgb, "detail")
        sure_anywhere = (scores >= self.confident).any()
        chosen = scores >= self.threshold
        if not chosen.any():  # the best box alone, from `floor` up (_pass kept those)
            chosen = np.argsort(-scores)[:1]
        rects, scores = self._kept(rgb, boxes[chosen], scores[chosen], spare_best=True)
        angles = [0.0] * len(rects)
        more = self._turned(rgb) if "turned" in self.framings and not sure_anywhere else []
        if self.second_opinion is not None and crowded:
            self.passes["cascade"] += 1
            more += [(tuple(box), box.score, 0.0) for box in self.second_opinion.detect(rgb)]
        for rect, score, angle in more:
            if not any(same_place(rect, other) for other in rects):
                rects.append(rect)
                scores.append(score)
                angles.append(angle)
        height, width = rgb.shape[:2]
        found = (Box.clipped(x, y, w, h, width, height, score, angle)
                 for (x, y, w, h), score, angle in zip(rects, scores, angles))
        return sorted((box for box in found if box is not None), key=lambda box: -box.score)

    def _kept(self, rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
              spare_best: bool = False) -> tuple[list, list]:
        """The boxes left by the NMS, framed as the cascade frames a face, that the verifier does not
        veto (it must accept a box scoring under `verify_below`, and be sure of one kept by the floor
        alone; with spare_best, it cannot veto the best box at `threshold` or above), with their scores."""
        kept = nms(boxes, scores, self.nms_iou)
        rects, scores = [as_cascade_box(boxes[i]) for i in kept], [float(scores[i]) for i in kept]
        unsure = [n for n, score in enumerate(scores) if score < self.verify_below
                  and not (spare_best and n == 0 and score >= self.threshold)]
        if self.verifier is None or not unsure:
            return rects, scores
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        probabilities = self.verifier.probabilities(gray, [rects[n] for n in unsure])
        bar = [FLOOR_VERIFIED if scores[n] < self.threshold else VERIFIED for n in unsure]
        vetoed = {n for n, p, needed in zip(unsure, probabilities, bar) if p < needed}
        return ([r for n, r in enumerate(rects) if n not in vetoed],
                [c for n, c in enumerate(scores) if n not in vetoed])

    def _turned(self, rgb: np.ndarray) -> list[tuple[tuple, float, float]]:
        """Faces the square pass finds at `threshold` in the picture turned by each of TURNS (and
        verified there, as upright boxes are): (box in the picture's pixels, score, turn), best first."""
        shrink = min(1.0, self.side / max(rgb.shape[:2]))
        small = _resized(rgb, (max(1, round(rgb.shape[1] * shrink)), max(1, round(rgb.shape[0] * shrink))))
        found = []
        for angle in TURNS:
            picture, matrix = turned(small, angle)
            boxes, scores, _ = self._pass(picture, "square", counted="turned")
            chosen = scores >= self.threshold
            rects, kept_scores = self._kept(picture, boxes[chosen], scores[chosen])
            back = cv2.invertAffineTransform(matrix)
            for (x, y, w, h), score in zip(rects, kept_scores):
                cx, cy = back @ (x + w / 2, y + h / 2, 1.0)
                side = w / shrink
                found.append(((cx / shrink - side / 2, cy / shrink - side / 2, side, side), score, float(angle)))
        if not found:
            return []
        kept = nms(np.array([f[0] for f in found]), np.array([f[1] for f in found]), self.nms_iou)
        return [found[i] for i in kept]

    def _more(self, boxes, scores, rgb: np.ndarray, framing: str) -> tuple[np.ndarray, np.ndarray]:
        """The boxes and scores so far, with a framing's added."""
        more, more_scores, _ = self._pass(rgb, framing)
        return np.concatenate([boxes, more]), np.concatenate([scores, more_scores])

    def _pass(self, rgb: np.ndarray, framing: str,
              counted: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Boxes (x, y, w, h) in the picture's pixels, their scores, and the framing's scale; the pass
        is counted in `passes` under `counted` (else the framing)."""
        self.passes[counted or framing] += 1
        picture, scale, offset = frame(rgb, framing, self.side)
        corners, scores = self.network(picture[None])
        corners, scores = corners[0], scores[0]
        keep = scores >= self.floor
        corners = (corners[keep] - np.tile(offset, 2)) / scale
        return np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1), scores[keep], scale


def as_cascade_box(box) -> tuple[float, float, float, float]:
    """A FaceBoxes box (x, y, w, h) reframed as the cascade frames the same face."""
    x, y, w, h = box
    (ratio_w, ratio_h), (shift_x, shift_y) = BOX_TO_CASCADE
    side = (w / ratio_w + h / ratio_h) / 2
    cx, cy = x + w / 2 - shift_x * side, y + h / 2 - shift_y * side
    return cx - side / 2, cy - side / 2, side, side


def frame(rgb: np.ndarray, framing: str, side: int) -> tuple[np.ndarray, float, np.ndarray]:
    """The picture as the network sees it in a framing, the scale applied, and where the picture's
    top-left corner lands (x, y). The margin is the mean colour, which the network sees as zero."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width) * FRAMING_SCALES[framing]
    small = _resized(rgb, (max(1, round(width * scale)), max(1, round(height * scale))))
    if framing == "detail":
        canvas_shape = tuple(-(-n // DETAIL_STEP) * DETAIL_STEP for n in small.shape[:2])
    else:
        canvas_shape = side, side
    canvas = np.empty(canvas_shape + (3,), np.uint8)
    canvas[:] = tuple(int(c) for c in MEAN_BGR[::-1])
    left, top = ((side - small.shape[1]) // 2, (side - small.shape[0]) // 2) if framing == "fill" else (0, 0)
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas, scale, np.array([left, top], np.float32)


def turned(rgb: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The picture turned counter-clockwise by angle degrees on a canvas that holds all of it (the mean
    colour beyond), and the 2x3 matrix from the picture's pixels to the canvas's."""
    height, width = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    size = round(height * sin + width * cos), round(height * cos + width * sin)
    matrix[:, 2] += (size[0] - width) / 2, (size[1] - height) / 2
    mean_rgb = tuple(float(c) for c in MEAN_BGR[::-1])
    return cv2.warpAffine(rgb, matrix, size, flags=cv2.INTER_LINEAR, borderValue=mean_rgb), matrix


def _resized(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    shrink = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
