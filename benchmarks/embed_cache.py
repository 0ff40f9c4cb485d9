"""Cache the face crops' CNN vectors of a shared face set, so head and threshold experiments take seconds.

Embeds every crop of ../shared/data/faces/<SET> once, the way enroll(faces="whole")
does (whole_image at 299 px, backbone random-init:0, CNN part only, colour_weight=0),
and stores vectors, labels and paths under $ANIMEFACE_BENCH_CACHE (default
/tmp/animeface-bench), outside the repository. Later calls load the cache.

    PYTHONPATH=. python benchmarks/embed_cache.py holoen20 moeimouto10
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from animeface.crop import whole_image
from animeface.io import iter_image_files, load_image

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
CACHE = Path(os.environ.get("ANIMEFACE_BENCH_CACHE", "/tmp/animeface-bench"))
BACKBONE = "random-init:0"
SIZE = 299


def face_set(name: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """Paths, integer labels and class names of a shared face set, in sorted order."""
    classes = sorted(p.name for p in (FACES / name).iterdir() if p.is_dir())
    paths, labels = [], []
    for c, cls in enumerate(classes):
        files = sorted(iter_image_files([FACES / name / cls]))
        paths += files
        labels += [c] * len(files)
    return paths, np.array(labels), classes


def crops(paths) -> np.ndarray:
    return np.stack([whole_image(load_image(p), SIZE) for p in paths])


def cnn_vectors(name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[Path]]:
    """(vectors, labels, classes, paths) of a face set; embeds and caches on first use."""
    paths, labels, classes = face_set(name)
    file = CACHE / f"{name}.{BACKBONE.replace(':', '-')}.npy"
    meta = CACHE / f"{name}.json"
    rel = [str(p.relative_to(FACES)) for p in paths]
    if file.is_file() and meta.is_file() and json.loads(meta.read_text()) == rel:
        return np.load(file), labels, classes, paths
    from animeface.embed import Embedder

    warnings.simplefilter("ignore")
    embedder = Embedder(BACKBONE, colour_weight=0)
    vectors = np.concatenate([embedder.embed(crops(paths[i:i + 64])) for i in range(0, len(paths), 64)])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(file, vectors)
    meta.write_text(json.dumps(rel))
    return vectors, labels, classes, paths


def colour_vectors(name: str, bins: tuple[int, int, int]) -> np.ndarray:
    """Colour histograms of a face set's crops with the given bins; cached on first use."""
    from animeface.embed import colour_histogram

    paths, _, _ = face_set(name)
    file = CACHE / f"{name}.colour-{'-'.join(map(str, bins))}.npy"
    if file.is_file() and len(np.load(file, mmap_mode="r")) == len(paths):
        return np.load(file)
    hists = np.stack([colour_histogram(whole_image(load_image(p), SIZE), bins) for p in paths])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(file, hists)
    return hists


if __name__ == "__main__":
    for set_name in sys.argv[1:] or ["holoen20", "moeimouto10"]:
        v, y, cl, _ = cnn_vectors(set_name)
        print(f"{set_name}: {v.shape} vectors, {len(cl)} classes, cached in {CACHE}")
