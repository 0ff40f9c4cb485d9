"""The inference runtime: a network built once in TensorFlow, converted to OpenVINO, cached, then run.

Both networks (the embedder's Inception-v3 and the FaceBoxes detector) go through here:
TensorFlow is imported only to convert, the converted model is cached in a folder named
by a digest of everything that shapes it, with a card whose sha256s are checked before
each load, and every run afterwards reads the cache alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

from . import files, models
from .errors import ModelError
from .io import available_cores
from .quiet import native_stderr_silenced

#: Arithmetic the CPU runs a network in. "auto": bf16 where the CPU has it, else f32.
PRECISIONS = ("auto", "bf16", "f32")
MODEL_FILES = ("network.xml", "network.bin")

_lock = threading.Lock()
_compiled: dict = {}


def cache_folder(key) -> Path:
    """The cache folder of a converted network, named by a digest of everything that shapes it (key,
    any JSON value)."""
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]
    return models.cache_dir() / "networks" / digest


def _openvino():
    """openvino, imported with its usage statistics off. Importing it otherwise sends an event to
    Google Analytics and writes ~/intel/ on every run; animeface writes nothing outside its cache and
    the folders it is given. Without openvino_telemetry, OpenVINO falls back on its own stub (a
    program that imported the package itself keeps it)."""
    sys.modules.setdefault("openvino_telemetry", None)  # `import openvino_telemetry` raises ImportError
    import openvino

    return openvino


def save_converted(function, folder: Path, card: dict) -> None:
    """Convert a tf.function to OpenVINO and cache it in folder with its card, atomically;
    when another process cached it first, theirs is kept."""
    ov = _openvino()

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = files.temp_dir(folder)
    try:
        with native_stderr_silenced():
            model = ov.convert_model(function)
        ov.save_model(model, str(tmp / "network.xml"), compress_to_fp16=False)
        card = {**card, "files": {n: models.sha256_file(tmp / n) for n in MODEL_FILES}}
        (tmp / "network.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "network.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_card(folder: Path) -> dict:
    """A cached network's card; a damaged one is a ModelError saying to delete the folder."""
    try:
        card = json.loads((folder / "network.json").read_text(encoding="utf-8"))
        if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
            raise ValueError("not a network card")
        return card
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: the cached network is damaged ({exc}); delete that folder and it "
                         "will be prepared again") from exc


def compiled(folder: Path, precision: str, prepare, shape: tuple[int, ...] | None = None) -> "object":
    """The cached network in folder compiled for the CPU, once per process and input shape;
    prepare() caches it first when the folder holds none.

    shape: compile for inputs of exactly this shape. OpenVINO runs a network of fixed shape about
    twice as fast as one of open shape (the detector, measured: 42 against 83 ms a 1024 px pass),
    at about 0.3 s to compile each shape, so callers pass a shape only from a small set."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    key = folder, precision, shape
    with _lock:
        if key not in _compiled:
            if not (folder / "network.json").is_file():
                prepare()
            _compiled[key] = _compile(folder, precision, shape)
        return _compiled[key]


def _compile(folder: Path, precision: str, shape: tuple[int, ...] | None):
    ov = _openvino()

    card = read_card(folder)
    for name in MODEL_FILES:
        if not (folder / name).is_file() or models.sha256_file(folder / name) != card["files"].get(name):
            raise ModelError(f"{folder}: the cached network is damaged ({name}); delete that folder and it "
                             "will be prepared again")
    core = ov.Core()
    if precision == "auto":
        precision = "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    try:
        network = core.read_model(str(folder / "network.xml"))
        if shape is not None:
            network.reshape(list(shape))
        return core.compile_model(network, "CPU", {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": available_cores(),
        })
    except RuntimeError as exc:
        raise ModelError(f"{folder}: OpenVINO could not load the cached network ({exc}); delete that folder "
                         "and it will be prepared again") from exc


class Requests:
    """One inference request per thread, reused while the thread runs the same compiled network;
    results are copied out. A new request costs little (under a millisecond), and each holds the
    network's buffers, so a thread keeps only its latest: a detector compiled for several shapes
    would otherwise hold the buffers of all of them."""

    def __init__(self):
        self._local = threading.local()

    def infer(self, network, inputs: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None or getattr(self._local, "network", None) is not network:
            request = self._local.request = network.create_infer_request()
            self._local.network = network
        result = request.infer({0: inputs})
        return [np.array(result[i], np.float32) for i in range(len(network.outputs))]
