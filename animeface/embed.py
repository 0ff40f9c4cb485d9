"""Turn face crops into L2-normalised vectors: Inception-v3 features plus a colour histogram.

TensorFlow is imported here, on first use, never at `import animeface`.
The backbone is one of:
  - "imagenet" (default): Keras ImageNet Inception-v3 "notop" weights, downloaded,
    pinned by sha256 (see models.json);
  - a path to that kind of Keras ``.h5`` weights file;
  - "tfhub" (the ImageNet Inception-v3 feature-vector module), any TF-Hub handle
    (URL) or a local SavedModel folder, loaded with ``tf.saved_model.load`` rather
    than ``hub.KerasLayer``, which is a tf-keras layer and cannot sit in a Keras 3
    model; TF-Hub image modules take [0, 1] floats;
  - "random-init" or "random-init:SEED": the real architecture with seeded random
    weights, for tests and measurements only, never a fallback.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from . import models
from .errors import ModelError

DEFAULT_BACKBONE = "imagenet"
TFHUB_INCEPTION_V3 = "https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5"
DEFAULT_INPUT_SIZE = 299
#: Weight of the colour histogram against the CNN vector (both unit length before
#: weighting); chosen by measurement on faces/holoen20, see benchmarks/colour_feature.py.
DEFAULT_COLOUR_WEIGHT = 0.02
HUE_BINS, SAT_BINS, GREY_BINS = 16, 4, 8
COLOUR_DIM = HUE_BINS * SAT_BINS + GREY_BINS
CNN_DIM = 2048


#: Loaded networks, shared by every Embedder of the same backbone and input size.
_LOADED: dict = {}


def resolve_backbone(backbone: str | os.PathLike | None) -> str:
    """The backbone spec in force: the argument, else ANIMEFACE_BACKBONE, else the default."""
    return str(backbone or os.environ.get("ANIMEFACE_BACKBONE") or DEFAULT_BACKBONE)


def colour_histogram(crop: np.ndarray, bins: tuple[int, int, int] = (HUE_BINS, SAT_BINS, GREY_BINS)) -> np.ndarray:
    """Hue x saturation histogram of coloured pixels plus a value histogram of grey ones.

    Hair and eye colours are strong cues for who an anime character is (ToonNet's
    "feature inserted network" idea). Square-rooted and L2-normalised. `bins` is
    (hue, saturation, grey), for measuring other layouts.
    """
    hue_bins, sat_bins, grey_bins = bins
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    h, s, v = (hsv[:, :, i].ravel() for i in range(3))
    coloured = (s >= 40) & (v >= 40)
    hs = np.histogram2d(h[coloured], s[coloured], bins=(hue_bins, sat_bins), range=((0, 180), (40, 256)))[0].ravel()
    grey = np.histogram(v[~coloured], bins=grey_bins, range=(0, 256))[0]
    hist = np.sqrt(np.concatenate([hs, grey]).astype(np.float32) / h.size)
    return hist / max(float(np.linalg.norm(hist)), 1e-12)


class Embedder:
    """Batched, L2-normalised face vectors from one backbone.

    ``backbone_id`` names the weights exactly, so a gallery can refuse vectors
    from any other backbone.
    """

    def __init__(self, backbone=None, colour_weight: float = DEFAULT_COLOUR_WEIGHT,
                 input_size: int = DEFAULT_INPUT_SIZE, batch_size: int = 32):
        if colour_weight < 0:
            raise ValueError(f"colour_weight must be >= 0, got {colour_weight}")
        if input_size < 75:
            raise ValueError(f"input_size must be at least 75 (Inception-v3's minimum), got {input_size}")
        self.spec = resolve_backbone(backbone)
        self.colour_weight = float(colour_weight)
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)
        self.backbone_id, self._load = self._identify(self.spec)

    @property
    def dim(self) -> int:
        return CNN_DIM + (COLOUR_DIM if self.colour_weight > 0 else 0)

    @property
    def preprocessing(self) -> dict:
        return {"input_size": self.input_size, "colour_weight": self.colour_weight,
                "colour_bins": [HUE_BINS, SAT_BINS, GREY_BINS]}

    def embed(self, crops) -> np.ndarray:
        """(n, dim) float32 unit vectors for n RGB uint8 crops of input_size x input_size."""
        crops = np.asarray(crops, dtype=np.uint8)
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"crops must have shape (n, {self.input_size}, {self.input_size}, 3), got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        key = (self.backbone_id, self.input_size)
        if key not in _LOADED:
            _LOADED[key] = self._load()
        forward = _LOADED[key]
        cnn = np.concatenate([forward(crops[i:i + self.batch_size]).numpy()
                              for i in range(0, len(crops), self.batch_size)]).astype(np.float32)
        cnn /= np.maximum(np.linalg.norm(cnn, axis=1, keepdims=True), 1e-12)
        if self.colour_weight == 0:
            return cnn
        colour = np.stack([colour_histogram(c) for c in crops]) * self.colour_weight
        vec = np.concatenate([cnn, colour], axis=1)
        return (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)

    # -- backbones -------------------------------------------------------------

    def _identify(self, spec: str):
        """Map a spec to (backbone_id, loader) without importing TensorFlow."""
        if spec == "imagenet":
            return "keras-inception-v3-imagenet", lambda: self._keras(models.fetch("inception_v3_imagenet_notop"))
        if spec == "random-init" or spec.startswith("random-init:"):
            seed_text = spec.partition(":")[2] or "0"
            try:
                seed = int(seed_text)
            except ValueError:
                raise ModelError(f"backbone {spec!r}: the seed after 'random-init:' must be an integer") from None
            return f"random-init:{seed}", lambda: self._keras(None, seed)
        if spec == "tfhub":
            spec = TFHUB_INCEPTION_V3
        if spec.startswith(("http://", "https://")):
            return spec, lambda: self._saved_model(_resolve_hub(spec))
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".h5":
            digest = models.sha256_file(path)
            known = models.manifest()["inception_v3_imagenet_notop"].sha256
            ident = "keras-inception-v3-imagenet" if digest == known else f"keras-inception-v3:{digest[:16]}"
            return ident, lambda: self._keras(path)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            return f"savedmodel:{models.sha256_file(path / 'saved_model.pb')[:16]}", lambda: self._saved_model(path)
        raise ModelError(
            f"backbone {spec!r} is not 'imagenet', 'tfhub', 'random-init[:SEED]', a TF-Hub URL, a Keras .h5 "
            "weights file or a SavedModel folder (check ANIMEFACE_BACKBONE)"
        )

    def _keras(self, weights: Path | None, seed: int | None = None):
        import keras
        import tensorflow as tf

        if weights is None:
            warnings.warn(f"animeface: backbone random-init:{seed} has RANDOM weights; names will be poor. "
                          "Use it for tests and measurements only.", stacklevel=3)
            keras.utils.set_random_seed(seed)
        size = self.input_size
        net = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=None,
                                             input_shape=(size, size, 3))
        if weights is not None:
            try:
                net.load_weights(str(weights))
            except Exception as exc:
                raise ModelError(f"{weights}: not Inception-v3 'notop' Keras weights ({exc})") from exc

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def forward(batch):
            return net(tf.cast(batch, tf.float32) / 127.5 - 1.0, training=False)

        return forward

    def _saved_model(self, folder: Path):
        import tensorflow as tf

        try:
            module = tf.saved_model.load(str(folder))
        except Exception as exc:
            raise ModelError(f"{folder}: could not load as a TensorFlow SavedModel ({exc})") from exc
        call = module if callable(module) else _first_output(module.signatures["serving_default"])
        size = self.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def forward(batch):
            return call(tf.cast(batch, tf.float32) / 255.0)

        return forward


def _first_output(signature):
    def call(x):
        return next(iter(signature(x).values()))
    return call


def _resolve_hub(handle: str) -> Path:
    os.environ.setdefault("TFHUB_CACHE_DIR", str(models.cache_dir() / "tfhub"))
    try:
        import tensorflow_hub as hub

        return Path(hub.resolve(handle))
    except Exception as exc:
        raise ModelError(
            f"could not fetch the TF-Hub module {handle} ({exc}). Offline, download it elsewhere and "
            "set ANIMEFACE_BACKBONE to the unpacked SavedModel folder or to the Keras .h5 weights file"
        ) from exc
