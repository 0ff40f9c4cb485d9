"""The embedder's network: Inception-v3 up to the layers a recipe pools, run by OpenVINO.

TensorFlow builds the network from real weights and is imported only to do that, once:
the network (with its pooling) is converted to an OpenVINO model and cached in
ANIMEFACE_CACHE/networks, keyed by the weights file's sha256, the layers, the pooling
and the input size. Every later run reads the cached model and never imports
TensorFlow. OpenVINO is the one runtime (measured against TensorFlow in
benchmarks/run.py); there is no fallback.

Weights come from:
  - "imagenet" (default): the official Keras ImageNet Inception-v3 "notop" file,
    downloaded and pinned by sha256 (embeddings/manifest.json);
  - a path to Inception-v3 Keras weights: that official file, or a Keras 3
    ``.weights.h5`` of the layers up to ``mixed8`` (like the one in shared data);
  - "random-init" or "random-init:SEED": seeded random weights, for tests only.

The backbone id is a digest of the weight values the network actually uses, so the
official file and a truncated copy holding the same numbers give the same id.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import models, runtime
from .errors import ModelError
from .quiet import native_stderr_silenced

DEFAULT_BACKBONE = "imagenet"
LAYERS = ("mixed0", "mixed1", "mixed2", "mixed3", "mixed4", "mixed5", "mixed6", "mixed7", "mixed8")
POOLINGS = ("avg", "gem", "max")
#: GeM's exponent: between average (1) and max pooling (infinity).
GEM_POWER = 3.0
#: Arithmetic the CPU runs the network in (runtime.PRECISIONS). "auto", bf16 where the CPU has it,
#: moved dev-set top-1 by 0.0 and -0.2 points and ran 2.0x faster (benchmarks/precision.py);
#: a gallery's vectors do not depend on it enough to matter, so galleries move between CPUs.
#: Bumped whenever the conversion changes what a cached network computes.
CONVERSION_VERSION = 1


def resolve_backbone(backbone: str | os.PathLike | None) -> str:
    """The backbone spec in force: the argument, else ANIMEFACE_BACKBONE, else the default."""
    return str(backbone or os.environ.get("ANIMEFACE_BACKBONE") or DEFAULT_BACKBONE)


@dataclass(frozen=True)
class Weights:
    """Where a network's weights come from: a file (with its sha256) or a random seed."""

    spec: str
    path: Path | None = None
    sha256: str | None = None
    seed: int | None = None

    @property
    def key(self) -> str:
        return f"random-init:{self.seed}" if self.path is None else self.sha256


def parse_spec(spec: str) -> Weights:
    """Check a backbone spec without touching TensorFlow or the network."""
    if spec == "random-init" or spec.startswith("random-init:"):
        try:
            seed = int(spec.partition(":")[2] or "0")
        except ValueError:
            raise ModelError(f"backbone {spec!r}: the seed after 'random-init:' must be an integer") from None
        warnings.warn(f"animeface: backbone random-init:{seed} has RANDOM weights; names will be poor. "
                      "Use it for tests only.", stacklevel=4)
        return Weights(spec, seed=seed)
    if spec == "imagenet":
        return Weights(spec)  # resolved to the downloaded file when first needed
    path = Path(spec).expanduser()
    if path.is_file() and path.name.endswith(".h5"):
        return Weights(spec, path)
    if not path.exists() and (path.name.endswith(".h5") or os.sep in spec):
        raise ModelError(f"backbone {spec}: no such file (check --backbone or ANIMEFACE_BACKBONE: the official "
                         f"Inception-v3 notop .h5 file, or a local copy; {LOCAL_WEIGHTS})")
    raise ModelError(f"backbone {spec!r} is not 'imagenet', 'random-init[:SEED]' or an Inception-v3 Keras "
                     ".h5 weights file (check --backbone or ANIMEFACE_BACKBONE)")


#: What ANIMEFACE_BACKBONE may point at, said wherever the weights cannot be had.
LOCAL_WEIGHTS = ("ANIMEFACE_BACKBONE may also point at a Keras 3 .weights.h5 holding Inception-v3's layers up to "
                 "mixed8 (no later layer is used)")


def check_weights(backbone: str | os.PathLike | None = None) -> None:
    """Find the weights file a backbone spec names (downloading the official one if needed), without
    TensorFlow; a ModelError says what is missing and how to point at a local copy."""
    spec = resolve_backbone(backbone)
    if spec == "random-init" or spec.startswith("random-init:"):
        return
    try:
        _with_file(parse_spec(spec))
    except ModelError as exc:
        raise ModelError(f"{exc}; {LOCAL_WEIGHTS}" if LOCAL_WEIGHTS not in str(exc) else str(exc)) from None


def _with_file(weights: Weights) -> Weights:
    """Fill in the file and its sha256, downloading the official file if needed."""
    if weights.seed is not None or weights.sha256:
        return weights
    path, sha256 = _weights_file(weights.path, models.cache_dir())
    return Weights(weights.spec, path, sha256)


@functools.lru_cache(maxsize=None)
def _weights_file(path: Path | None, cache: Path) -> tuple[Path, str]:
    """A weights file and its sha256, found and hashed once per process (every Network of it
    shares them). The official file is verified against the manifest's sha256 by fetch."""
    if path is None:
        return models.fetch("inception_v3_imagenet_notop"), models.manifest()["inception_v3_imagenet_notop"].sha256
    return path, models.sha256_file(path)


def deepest_layer(layers) -> str:
    """The last of `layers` in the network: where it can be cut."""
    return max(layers, key=LAYERS.index)


def network_folder(weights: Weights, layers: tuple[str, ...], pooling: str, size: int, maps: bool = False) -> Path:
    key = [weights.key, list(layers), pooling, size, CONVERSION_VERSION]
    return runtime.cache_folder(key + ["maps"] if maps else key)


class Network:
    """Pooled features of the recipe's layers for a batch of uint8 RGB crops: (n, sum of channels).

    maps=True: the layers' feature maps before pooling instead, one (n, height, width, channels)
    array per layer (what explain.py attributes a similarity to); a network converted apart."""

    def __init__(self, spec: str, layers: tuple[str, ...], pooling: str, size: int, precision: str = "auto",
                 maps: bool = False):
        if precision not in runtime.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(runtime.PRECISIONS)}, got {precision!r}")
        for layer in layers:
            if layer not in LAYERS:
                raise ValueError(f"layer {layer!r} is not one of {', '.join(LAYERS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.weights = parse_spec(spec)
        self.layers, self.pooling, self.size = tuple(layers), pooling, int(size)
        self.precision, self.maps = precision, maps
        self._requests = runtime.Requests()

    @property
    def deepest(self) -> str:
        return deepest_layer(self.layers)

    @property
    def id(self) -> str:
        """A digest of the weight values this network uses: pinned for known files, else read
        from the cached network (converting it first if needed)."""
        if self.weights.seed is not None:
            return f"random-init:{self.weights.seed}"
        official = self.weights.path is None  # its sha256 is in the manifest: no download needed
        sha256 = models.manifest()["inception_v3_imagenet_notop"].sha256 if official else self._file().sha256
        digest = models.known_weights().get(sha256, {}).get(self.deepest)
        if digest is None:
            self._compiled()
            digest = runtime.read_card(self._folder(self._file()))["weights_digest"]
        return f"inception-v3:{digest[:16]}"

    def _file(self) -> Weights:
        return _with_file(self.weights)

    def _folder(self, weights: Weights) -> Path:
        return network_folder(weights, self.layers, self.pooling, self.size, self.maps)

    def __call__(self, crops: np.ndarray) -> np.ndarray | list[np.ndarray]:
        outputs = self._requests.infer(self._compiled(), np.ascontiguousarray(crops, np.uint8))
        return outputs if self.maps else outputs[0]

    def _compiled(self):
        weights = self._file()
        folder = self._folder(weights)
        return runtime.compiled(folder, self.precision,
                                lambda: convert(weights, self.layers, self.pooling, self.size, folder, self.maps))


def convert(weights: Weights, layers: tuple[str, ...], pooling: str, size: int, folder: Path,
            maps: bool = False) -> None:
    """Build the network in TensorFlow from the weights; runtime converts and caches it."""
    print("animeface: preparing the embedder, once (building Inception-v3 and converting it; "
          "under a minute)", file=sys.stderr, flush=True)
    with native_stderr_silenced():  # TensorFlow's start-up notes are noise to a user
        net, digest = _keras_network(weights, layers, pooling, size, maps)
    pinned = models.known_weights().get(weights.sha256, {}).get(deepest_layer(layers))
    if pinned and pinned != digest:
        raise ModelError(f"{weights.path}: its sha256 is that of a known weights file, but the weights read "
                         f"from it differ ({digest[:16]} against {pinned[:16]})")
    runtime.save_converted(net, folder, {
        "weights": weights.key, "weights_digest": digest, "layers": list(layers), "pooling": pooling,
        "input_size": size, "conversion_version": CONVERSION_VERSION, "outputs": "maps" if maps else "pooled"})


def _keras_network(weights: Weights, layers: tuple[str, ...], pooling: str, size: int, maps: bool = False):
    """A tf.function from uint8 crops to pooled features (or, maps=True, the layers' maps), and the
    digest of the weights it uses."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()  # fresh layer names: Keras 3 weight files are keyed by them
    if weights.seed is not None:
        keras.utils.set_random_seed(weights.seed)
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(size, size, 3))
    if weights.seed is None:
        _load_weights(base, weights.path)
    cut = keras.Model(base.input, [base.get_layer(name).output for name in layers])
    digest = hashlib.sha256()
    for variable in cut.weights:
        digest.update(np.ascontiguousarray(variable.numpy(), np.float32).tobytes())

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def network(batch):
        out = cut(tf.cast(batch, tf.float32) / 127.5 - 1.0, training=False)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return out if maps else tf.concat([_pool(tf, m, pooling) for m in out], axis=1)

    return network, digest.hexdigest()


def _load_weights(base, path: Path) -> None:
    """The official full "notop" file (Keras 2 layout) loads into the whole base; a Keras 3
    .weights.h5 of the layers up to mixed8 loads into the trunk."""
    import h5py
    import keras

    try:
        with h5py.File(path, "r") as fh:
            legacy = "layer_names" in fh.attrs
        target = base if legacy else keras.Model(base.input, base.get_layer("mixed8").output)
        target.load_weights(str(path))
    except Exception as exc:  # h5py, Keras and TensorFlow raise many kinds here
        raise ModelError(f"{path}: not Inception-v3 Keras weights covering the layers up to mixed8 ({exc})") from exc


def _pool(tf, maps, pooling: str):
    if pooling == "avg":
        return tf.reduce_mean(maps, axis=[1, 2])
    if pooling == "max":
        return tf.reduce_max(maps, axis=[1, 2])
    return tf.pow(tf.reduce_mean(tf.pow(tf.maximum(maps, 1e-6), GEM_POWER), axis=[1, 2]), 1.0 / GEM_POWER)
