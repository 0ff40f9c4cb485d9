"""The gallery: enrolled face vectors, their labels and sources, a FAISS index over them,
and the folder format they are saved in (JSON + .npy + .npz, never pickle)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import GalleryError

FORMAT_VERSION = 1
#: Exact search is fastest up to about this many vectors; above it, HNSW.
EXACT_SEARCH_LIMIT = 100_000


def build_index(vectors: np.ndarray):
    """A FAISS inner-product index chosen by size: exact (flat) for small galleries, HNSW for large."""
    import faiss

    dim = vectors.shape[1]
    if len(vectors) <= EXACT_SEARCH_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class Gallery:
    """Enrolled vectors with per-vector metadata: label, source file and source sha256."""

    def __init__(self, backbone_id: str, dim: int, preprocessing: dict):
        self.backbone_id = backbone_id
        self.dim = int(dim)
        self.preprocessing = dict(preprocessing)
        self.vectors = np.zeros((0, self.dim), np.float32)
        self.entries: list[dict] = []
        self._index = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[str]:
        return [e["label"] for e in self.entries]

    @property
    def characters(self) -> dict[str, int]:
        """Enrolled names with their sample counts, in enrolment order."""
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        return counts

    def has(self, label: str, sha256: str) -> bool:
        return any(e["label"] == label and e["sha256"] == sha256 for e in self.entries)

    def add(self, vectors: np.ndarray, entries: list[dict]) -> None:
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        if len(vectors) != len(entries):
            raise ValueError("one entry is needed per vector")
        self.vectors = np.concatenate([self.vectors, vectors])
        self.entries.extend(dict(e) for e in entries)
        self._index = None

    def remove(self, label: str) -> int:
        """Drop every vector of one character; returns how many went."""
        keep = [i for i, e in enumerate(self.entries) if e["label"] != label]
        removed = len(self.entries) - len(keep)
        self.vectors = self.vectors[keep]
        self.entries = [self.entries[i] for i in keep]
        self._index = None
        return removed

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities and row numbers of the k nearest enrolled vectors per query."""
        if self._index is None:
            self._index = build_index(self.vectors)
        k = min(k, len(self))
        return self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    # -- files -----------------------------------------------------------------

    def save(self, folder: os.PathLike, head_arrays: dict | None = None, extra: dict | None = None) -> None:
        """Write the gallery folder atomically: build it beside the target, then swap it in."""
        import faiss

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            description = {
                "format_version": FORMAT_VERSION,
                "backbone_id": self.backbone_id,
                "embedding_dim": self.dim,
                "preprocessing": self.preprocessing,
                "labels": list(self.characters),
                "entries": self.entries,
                **(extra or {}),
            }
            with open(tmp / "gallery.json", "w", encoding="utf-8") as fh:
                json.dump(description, fh, indent=1, ensure_ascii=False)
            np.save(tmp / "vectors.npy", self.vectors, allow_pickle=False)
            if head_arrays:
                np.savez(tmp / "head.npz", **head_arrays)
            if len(self):
                faiss.write_index(build_index(self.vectors) if self._index is None else self._index,
                                  str(tmp / "index.faiss"))
            _fsync_tree(tmp)
            _swap_into_place(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def exists(folder: os.PathLike) -> bool:
        """Whether a saved gallery is there (or its backup, left by an interrupted save)."""
        folder = Path(folder)
        return (folder / "gallery.json").is_file() or (_backup_of(folder) / "gallery.json").is_file()

    @classmethod
    def load(cls, folder: os.PathLike) -> tuple["Gallery", dict | None, dict]:
        """Read a gallery folder; returns (gallery, head arrays or None, the JSON description)."""
        folder = Path(folder)
        if not (folder / "gallery.json").is_file() and Gallery.exists(folder):
            folder = _backup_of(folder)  # a save was interrupted between its two renames
        try:
            with open(folder / "gallery.json", encoding="utf-8") as fh:
                description = json.load(fh)
            version = description.get("format_version")
            if version != FORMAT_VERSION:
                raise GalleryError(f"{folder}: gallery format {version} is not supported (expected {FORMAT_VERSION})")
            gallery = cls(description["backbone_id"], description["embedding_dim"], description["preprocessing"])
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
            head_path = folder / "head.npz"
            head_arrays = None
            if head_path.is_file():
                with np.load(head_path, allow_pickle=False) as npz:
                    head_arrays = {k: npz[k] for k in npz.files}
        except GalleryError:
            raise
        except FileNotFoundError as exc:
            raise GalleryError(f"{folder}: not a gallery folder (missing {Path(exc.filename).name})") from exc
        except (KeyError, ValueError, OSError) as exc:
            raise GalleryError(f"{folder}: damaged gallery ({exc})") from exc
        entries = description.get("entries", [])
        if vectors.shape != (len(entries), gallery.dim):
            raise GalleryError(f"{folder}: vectors.npy has shape {vectors.shape}, "
                               f"expected ({len(entries)}, {gallery.dim})")
        gallery.add(vectors, entries)
        if len(gallery) and (folder / "index.faiss").is_file():
            import faiss

            index = faiss.read_index(str(folder / "index.faiss"))
            if index.ntotal == len(gallery) and index.d == gallery.dim:
                gallery._index = index
        return gallery, head_arrays, description


def _backup_of(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def _swap_into_place(new: Path, folder: Path) -> None:
    backup = _backup_of(folder)
    if folder.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(folder, backup)
    os.replace(new, folder)
    shutil.rmtree(backup, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
