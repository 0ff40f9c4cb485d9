"""Model files: a pinned manifest, verified downloads, and a cache.

Nothing from elsewhere is bundled with the package. Each such file is named in a
manifest (cascades/manifest.json, embeddings/manifest.json) with its address, size,
sha256 and licence; it is downloaded once into the cache, checked, and moved into
place atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError


#: The face detectors (detect.Detector's kinds), here so that the command line lists them
#: without loading OpenCV: the learned FaceBoxes network, and the LBP cascade.
DETECTORS = ("faceboxes", "cascade")
DEFAULT_DETECTOR = "faceboxes"
#: The share of strangers a gallery refuses unless told otherwise (thresholds.py), here for the same
#: reason. Measured on held-out characters (docs/benchmarks.md, benchmarks/open_set.py; 6 enrolled
#: from 5 shots + 2 strangers): 0.9 named 79.0% of known faces and refused 86.2% of strangers, 0.95
#: 74.3% and 88.7%. A wrong name files a picture under the wrong character; unknown leaves it to
#: the user, and most faces in a downloads folder are strangers.
STRANGER_REFUSAL = 0.95


@dataclass(frozen=True)
class ModelFile:
    name: str
    filename: str
    url: str
    size: int
    sha256: str
    licence: str
    env: str


def _read_manifest(package: str) -> dict:
    from importlib.resources import files

    return json.loads((files(package) / "manifest.json").read_text(encoding="utf-8"))


def manifest() -> dict[str, ModelFile]:
    """Every downloadable model file, by name."""
    raw = {**_read_manifest("animeface.cascades"), **_read_manifest("animeface.embeddings")["files"]}
    return {name: ModelFile(name=name, **entry) for name, entry in raw.items()}


def known_weights() -> dict[str, dict[str, str]]:
    """Backbone weights files known to hold the ImageNet numbers: file sha256 -> {deepest layer
    used: digest of the weight values up to it} (see backbone.py)."""
    return _read_manifest("animeface.embeddings")["known_weights"]


def cache_dir() -> Path:
    """ANIMEFACE_CACHE, else $XDG_CACHE_HOME/animeface, else ~/.cache/animeface."""
    if os.environ.get("ANIMEFACE_CACHE"):
        return Path(os.environ["ANIMEFACE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "animeface"


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, progress: bool = True) -> Path:
    """Return the local path of a manifest file, downloading and verifying it if needed."""
    entries = manifest()
    if name not in entries:
        raise ModelError(f"unknown model file {name!r}; known: {', '.join(entries)}")
    model = entries[name]
    target = cache_dir() / model.filename
    if target.is_file() and sha256_file(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=model.filename + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _download(model, out, progress)
        got_size, got_sha = os.path.getsize(tmp), sha256_file(tmp)
        if got_size != model.size or got_sha != model.sha256:
            raise ModelError(
                f"{model.filename}: downloaded file does not match the manifest "
                f"(size {got_size} vs {model.size}, sha256 {got_sha} vs {model.sha256}); "
                f"download it yourself and set {model.env} to its path"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _download(model: ModelFile, out, progress: bool) -> None:
    """Stream model.url into out, stopping as soon as it is longer than the manifest's size."""
    try:
        with urllib.request.urlopen(model.url, timeout=60) as resp:
            bar = _progress_bar(model, progress)
            written = 0
            while block := resp.read(min(1 << 16, model.size + 1 - written)):
                written += len(block)
                if written > model.size:
                    bar.close()
                    raise ModelError(f"{model.filename}: the download from {model.url} is larger than the "
                                     f"manifest's {model.size} bytes, so it is not that file; stopped. Download "
                                     f"it yourself (sha256 {model.sha256}) and set {model.env} to its path")
                out.write(block)
                bar.update(len(block))
            bar.close()
    except OSError as exc:  # URLError, timeouts, DNS failures are all OSError
        raise ModelError(
            f"could not download {model.filename} from {model.url} ({exc}). "
            f"If you are offline, fetch it elsewhere (sha256 {model.sha256}) and set "
            f"{model.env} to the local file's path, or place it in {cache_dir()}"
        ) from exc


def _progress_bar(model: ModelFile, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=model.size, unit="B", unit_scale=True, desc=model.filename, disable=not enabled)
