"""The gallery: enrolled face vectors, their labels and sources, a FAISS index over them,
and the folder format they are saved in (JSON + .npy + .npz, never pickle).

A gallery folder may come from someone else, so loading trusts nothing in it:
gallery.json is checked field by field against the schema below, each array's
.npy header is checked against the shape and type the JSON implies before any
of it is read, and the FAISS index is rebuilt from the vectors rather than read
(its reader is not made for hostile files). Any fault is one GalleryError
naming the file and the field. A save checks what it writes by the same rules, so
it never writes a gallery that load refuses.

Several programs may change one gallery (two enrolls, an enroll while `serve`
runs): each records its changes since it read the gallery, and a save, under
the lock of the gallery's parent folder, replays them onto whatever another
writer saved meanwhile (Recognizer.save), so no writer's change is lost.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import files
from .boxes import same_place
from .embed import Recipe
from .errors import CharacterNameError, GalleryError
from .io import max_pixels
from .thresholds import WEIGHT_BOUNDS, class_means

#: 2: vectors from the trained embedder; preprocessing records its recipe and projection.
#: 3: the embedder anime-faces-v2 and the decision rule calibrated against strangers ("calibration").
FORMAT_VERSION = 3
#: Every file a gallery folder may hold (index.faiss: written by earlier versions, no longer read).
GALLERY_FILES = ("gallery.json", "vectors.npy", "head.npz", "index.faiss")
HEAD_ARRAYS = ("coef", "intercept", "classes", "penalty")
#: A character name becomes a folder name when sorting: at most this many bytes in UTF-8.
NAME_MAX_BYTES = 200
MAX_DIM = 1 << 16
MAX_TEXT = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Unicode categories no name may hold: control characters (NUL, U+0085 ...), line and paragraph separators.
_NOT_IN_NAMES = ("Cc", "Zl", "Zp")
#: Exact search is fastest up to about this many characters; above it, HNSW.
EXACT_SEARCH_LIMIT = 100_000


def validate_name(name: str) -> str:
    """A character name, stripped; it becomes a folder name when sorting, so it must be a safe one."""
    if not isinstance(name, str) or not name.strip():
        raise CharacterNameError(f"a character name must be a non-empty string, got {name!r}")
    name = name.strip()
    if any(c in name for c in '/\\') or name in (".", "..") or name.startswith((".", "_")) \
            or any(unicodedata.category(c) in _NOT_IN_NAMES for c in name):
        raise CharacterNameError(f"character name {name!r} must not contain slashes, control characters or line "
                                 "breaks, or start with '.' or '_' (reserved for sort's own folders)")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise CharacterNameError(f"character name {name!r} is not valid text (undecodable bytes)") from None
    if size > NAME_MAX_BYTES:
        raise CharacterNameError(f"character name {name[:40]!r}... is {size} bytes long in UTF-8; "
                                 f"the limit is {NAME_MAX_BYTES} (it becomes a folder name)")
    return name


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
    """Enrolled vectors with per-vector metadata: label, source file and source sha256, and a
    FAISS index over each character's mean vector (what a face is compared with)."""

    def __init__(self, backbone_id: str, dim: int, preprocessing: dict):
        self.backbone_id = backbone_id
        self.dim = int(dim)
        self.preprocessing = dict(preprocessing)
        self.vectors = np.zeros((0, self.dim), np.float32)
        self.entries: list[dict] = []
        self._index = None
        #: The saved gallery this one was read as or last saved as (None: never saved).
        self.revision: str | None = None
        #: Changes since then, as ("add", vectors, entries) and ("remove", label, sha256, box).
        self.changes: list[tuple] = []

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

    def has(self, label: str, sha256: str, box: list | None = None) -> bool:
        """Whether a face of this picture (and, if given, this box) is enrolled under label."""
        return any(e["label"] == label and e["sha256"] == sha256 and box in (None, e.get("box")) for e in self.entries)

    def enrolled_as(self, sha256: str, box) -> str | None:
        """The name this face is enrolled under, if any: an entry of the same picture whose box is at
        the same place (boxes.same_place). One face is one character."""
        return next((e["label"] for e in self.entries if e["sha256"] == sha256 and "box" in e
                     and same_place(e["box"], box)), None)

    def add(self, vectors: np.ndarray, entries: list[dict]) -> None:
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        if len(vectors) != len(entries):
            raise ValueError("one entry is needed per vector")
        self.vectors = np.concatenate([self.vectors, vectors])
        self.entries.extend(dict(e) for e in entries)
        self._index = None
        self.changes.append(("add", vectors, [dict(e) for e in entries]))

    def remove(self, label: str, sha256: str | None = None, box: list | None = None) -> int:
        """Drop every vector of one character, or only those of one source picture (and box);
        returns how many went."""
        keep = [i for i, e in enumerate(self.entries) if e["label"] != label
                or sha256 not in (None, e["sha256"]) or box not in (None, e.get("box"))]
        removed = len(self.entries) - len(keep)
        self.vectors = self.vectors[keep]
        self.entries = [self.entries[i] for i in keep]
        self._index = None
        self.changes.append(("remove", label, sha256, box))
        return removed

    def replay(self, changes: list[tuple]) -> list[tuple[dict, str]]:
        """Make here the changes made to another copy of this gallery: its removals, and its
        additions of faces not enrolled here already. A face enrolled here under another name keeps
        it (the first save keeps a face): returns those additions left out, each with that name."""
        lost = []
        for change in changes:
            if change[0] == "remove":
                self.remove(*change[1:])
                continue
            vectors, entries = change[1:]
            owners = [self.enrolled_as(e["sha256"], e["box"]) if "box" in e
                      else e["label"] if self.has(e["label"], e["sha256"]) else None for e in entries]
            lost += [(e, owner) for e, owner in zip(entries, owners) if owner not in (None, e["label"])]
            new = [i for i, owner in enumerate(owners) if owner is None]
            if new:
                self.add(vectors[new], [entries[i] for i in new])
        return lost

    def centroids(self) -> np.ndarray:
        """Each character's mean vector, unit length, one row per name of `characters`."""
        index = {name: i for i, name in enumerate(self.characters)}
        return class_means(self.vectors, np.array([index[x] for x in self.labels], np.int64),
                           len(index))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities to the k nearest character means per query, and those characters'
        positions in `characters`."""
        if self._index is None:
            self._index = build_index(self.centroids())
        k = min(k, len(self.characters))
        return self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    # -- files -----------------------------------------------------------------

    def save(self, folder: os.PathLike, head_arrays: dict | None = None, extra: dict | None = None) -> None:
        """Write the gallery folder atomically: build it beside the target, then swap it in.

        Only a folder that holds a gallery (or nothing) is replaced, and only the
        gallery's own files are ever removed: pointing a save at a folder of
        pictures is a GalleryError, with the pictures untouched. A save the disk
        refuses (full, read-only) is a GalleryError saying why; the gallery saved
        before is left whole.
        """
        folder = Path(folder).expanduser().resolve()
        revision = uuid.uuid4().hex
        description = {
            "format_version": FORMAT_VERSION,
            "revision": revision,
            "backbone_id": self.backbone_id,
            "embedding_dim": self.dim,
            "preprocessing": self.preprocessing,
            "labels": list(self.characters),
            "entries": self.entries,
            **(extra or {}),
        }
        try:  # what load would refuse is never written
            _check_description(description, folder / "gallery.json")
            if not np.isfinite(self.vectors).all():
                raise _Invalid("vectors", "hold NaN or infinite values")
        except _Invalid as exc:
            raise GalleryError(f"{folder}: the gallery was not saved: its {exc.args[0]} {exc.args[1]}, "
                               "and a gallery that holds them could not be opened again") from None
        try:
            self._save(folder, description, head_arrays)
        except OSError as exc:
            raise GalleryError(f"{folder}: the gallery could not be saved ({exc.strerror or exc}); the gallery "
                               "saved before is unchanged") from exc
        self.revision, self.changes = revision, []

    def _save(self, folder: Path, description: dict, head_arrays: dict | None) -> None:
        backup = _backup_of(folder)
        for path in (folder, backup):
            if os.path.lexists(path) and not _holds_gallery(path):
                raise GalleryError(f"{path}: exists and is not a gallery folder (it holds other files); "
                                   "choose a new or empty folder for the gallery")
        folder.parent.mkdir(parents=True, exist_ok=True)
        for leftover in files.leftovers(folder.parent, of=folder.name):  # from a save that was killed
            if _holds_gallery(leftover):
                _remove_gallery(leftover)
        tmp = files.temp_dir(folder)
        try:
            # backslashreplace writes an undecodable file name's surrogates as JSON escapes: lossless
            with open(tmp / "gallery.json", "w", encoding="utf-8", errors="backslashreplace") as fh:
                json.dump(description, fh, indent=1, ensure_ascii=False)
            np.save(tmp / "vectors.npy", self.vectors, allow_pickle=False)
            if head_arrays:
                np.savez(tmp / "head.npz", **head_arrays)
            _fsync_tree(tmp)
            if os.path.lexists(folder):
                if os.path.lexists(backup):  # older than the folder, which is whole
                    _remove_gallery(backup)
                os.rename(folder, backup)
            os.rename(tmp, folder)
            if os.path.lexists(backup):
                _remove_gallery(backup)
        finally:
            if tmp.exists():
                _remove_gallery(tmp)

    @staticmethod
    def exists(folder: os.PathLike) -> bool:
        """Whether a saved gallery is there (or its backup, left by an interrupted save)."""
        folder = Path(folder)
        return (folder / "gallery.json").is_file() or (_backup_of(folder) / "gallery.json").is_file()

    @classmethod
    def load(cls, folder: os.PathLike) -> tuple["Gallery", dict | None, dict]:
        """Read and check a gallery folder; returns (gallery, head arrays or None, the JSON description)."""
        folder = Path(folder)
        if not (folder / "gallery.json").is_file() and Gallery.exists(folder):
            folder = _backup_of(folder)  # a save was interrupted between its two renames
        for name in ("gallery.json", "vectors.npy"):
            if not (folder / name).is_file():
                raise GalleryError(f"{folder}: not a gallery folder (missing {name})")
        with _reading(folder / "gallery.json"):
            with open(folder / "gallery.json", encoding="utf-8") as fh:
                description = json.load(fh)
        try:
            _check_description(description, folder / "gallery.json")
        except _Invalid as exc:
            _fail(folder / "gallery.json", *exc.args)
        gallery = cls(description["backbone_id"], description["embedding_dim"], description["preprocessing"])
        entries, labels = description["entries"], description["labels"]
        with _reading(folder / "vectors.npy"), open(folder / "vectors.npy", "rb") as fh:
            vectors = _read_npy(fh, folder / "vectors.npy", (len(entries), gallery.dim), np.dtype("<f4"))
        head_arrays = _read_head(folder / "head.npz", gallery.dim, labels)
        gallery.add(vectors, entries)
        gallery.revision, gallery.changes = description.get("revision"), []  # what was read is no change
        return gallery, head_arrays, description


@contextmanager
def locked(folder: os.PathLike):
    """Hold the lock of a gallery's parent folder (the gallery's own folder is replaced by each
    save), waiting while another program holds it: from reading what is saved to saving."""
    parent = Path(folder).expanduser().resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with files.FolderLock(parent, wait=True):
        yield


def _backup_of(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def _holds_gallery(folder: Path) -> bool:
    """Whether folder is a real folder (no link) holding nothing but gallery files."""
    return folder.is_dir() and not folder.is_symlink() and set(os.listdir(folder)) <= set(GALLERY_FILES)


def _remove_gallery(folder: Path) -> None:
    """Remove a gallery folder: its gallery files, then the folder if that left it empty."""
    for name in GALLERY_FILES:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is in it now: it stays


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


# -- checking a gallery on load ------------------------------------------------------


def _reading(path: Path):
    """Any failure to read or parse one file of the gallery, as a GalleryError naming it."""
    return files.parsing(path, GalleryError, "damaged gallery file")


def _fail(path: Path, field: str, problem: str):
    raise GalleryError(f"{path}: damaged gallery: {field} {problem}")


class _Invalid(Exception):
    """A field of gallery.json that load refuses: (field, what is wrong)."""


def _is_int(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_number(value, low: float, high: float) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


def _is_text(value, limit: int = MAX_TEXT) -> bool:
    return isinstance(value, str) and len(value) <= limit


def _check_description(d, path: Path) -> None:
    """gallery.json against its schema: every field the code reads, with its type and bounds;
    _Invalid(field, problem) for the first that breaks it."""
    if not isinstance(d, dict):
        raise _Invalid("the top level", "must be a JSON object")
    if d.get("format_version") != FORMAT_VERSION or type(d.get("format_version")) is not int:
        version = d.get("format_version")
        older = type(version) is int and version < FORMAT_VERSION
        raise GalleryError(f"{path}: gallery format {version!r} is not supported (expected {FORMAT_VERSION})" + (
            "; a gallery made by an earlier animeface holds vectors this embedder cannot compare with: enroll "
            "its characters again into a new gallery (its gallery.json lists each picture under "
            "entries[].source)" if older else ""))
    if d.get("revision") is not None and not _is_text(d.get("revision"), 100):
        raise _Invalid("revision", "must be text or null")
    if not _is_text(d.get("backbone_id")):
        raise _Invalid("backbone_id", "must be text")
    if not _is_int(d.get("embedding_dim"), 1, MAX_DIM):
        raise _Invalid("embedding_dim", f"must be a whole number from 1 to {MAX_DIM}")
    pre = d.get("preprocessing")
    if not isinstance(pre, dict):
        raise _Invalid("preprocessing", "must be an object")
    try:
        Recipe.from_dict(pre.get("recipe"))
    except (TypeError, ValueError) as exc:
        raise _Invalid("preprocessing.recipe", f"is not an embedder recipe ({exc})")
    for key in ("projection", "projection_sha256"):
        if pre.get(key) is not None and not _is_text(pre.get(key)):
            raise _Invalid(f"preprocessing.{key}", "must be text or null")
    labels, entries = d.get("labels"), d.get("entries")
    if not isinstance(labels, list) or not isinstance(entries, list):
        raise _Invalid("labels and entries", "must be lists")
    for i, label in enumerate(labels):
        try:
            if validate_name(label) != label:
                raise CharacterNameError("has spaces around it")
        except CharacterNameError as exc:
            raise _Invalid(f"labels[{i}]", f"is not a valid character name: {exc}")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("label"), str):
            raise _Invalid(f"entries[{i}]", "must be an object with a label")
        problem = face_problem(e)
        if problem:
            raise _Invalid(f"entries[{i}].{problem[0]}", problem[1])
    if labels != list(dict.fromkeys(e["label"] for e in entries)):
        raise _Invalid("labels", "must list each entry's label once, in order of first appearance")
    rule = d.get("calibration")
    if rule is not None and not (
            isinstance(rule, dict) and set(rule) - {"rule"} == {"weights", "stranger_mean", "stranger_spread", "source"}
            and type(rule.get("rule", 1)) is int and rule.get("rule", 1) >= 1
            and isinstance(rule["weights"], list) and len(rule["weights"]) == len(WEIGHT_BOUNDS)
            and all(_is_number(w, low, high) for w, (low, high) in zip(rule["weights"], WEIGHT_BOUNDS))
            and _is_number(rule["stranger_mean"], -100.0, 100.0) and _is_number(rule["stranger_spread"], 0.0, 100.0)
            and rule["source"] in ("calibrated", "fallback")):
        raise _Invalid("calibration", "must be an object of weights (3 numbers within the bounds a fit can give), "
                                      "stranger_mean, stranger_spread (numbers in range), source "
                                      "(calibrated or fallback) and rule (a whole number from 1; another version's is fitted again)")


def face_problem(face: dict) -> tuple[str, str] | None:
    """(field, what is wrong) for the first bad field of a face record (its source picture,
    the picture's sha256, its box, the turn that sets it upright), or None: what a gallery will
    accept from any file."""
    if not _is_text(face.get("source")):
        return "source", "must be text"
    if not isinstance(face.get("sha256"), str) or not _SHA256.fullmatch(face["sha256"]):
        return "sha256", "must be 64 hexadecimal digits"
    problem = box_problem(face.get("box", [0, 0, 1, 1]))
    if problem:
        return "box", problem
    if "angle" in face and not _is_number(face["angle"], -180.0, 180.0):
        return "angle", "must be degrees from -180 to 180"
    return None


def box_problem(box, width: int | None = None, height: int | None = None) -> str | None:
    """What is wrong with a face box [x, y, w, h] in a picture of width x height pixels, or None: it must be
    whole pixels inside the picture. With no size (a box read from a file), inside some picture the pixel
    limit lets in. Boxes given (the web page's) and boxes read (galleries, cluster runs) are checked by this
    one rule, so no box makes a crop larger than its picture."""
    if not (isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box)):
        return "must be [x, y, w, h] in whole pixels"
    x, y, w, h = box
    fits = x >= 0 and y >= 0 and w >= 1 and h >= 1
    if width is None:
        if not (fits and (x + w) * (y + h) <= max_pixels()):
            return f"{box} is not inside any picture of at most {max_pixels()} pixels (ANIMEFACE_MAX_PIXELS)"
    elif not (fits and x + w <= width and y + h <= height):
        return f"{box} is not inside the {width}x{height} picture"
    return None


def _read_npy(fh, path: Path, shape: tuple, dtype: np.dtype) -> np.ndarray:
    try:
        return files.read_npy(fh, shape, dtype)
    except ValueError as exc:
        raise GalleryError(f"{path}: damaged gallery: {exc}") from None


def _read_head(path: Path, dim: int, labels: list[str]) -> dict | None:
    """The softmax head's arrays, whose shapes must fit the gallery: a head exists with two or more
    characters, and its classes are the gallery's labels."""
    if not path.is_file():
        if len(labels) >= 2:
            _fail(path, "the file", f"is missing (the gallery has {len(labels)} characters)")
        return None
    k = len(labels)
    expected = {"coef": ((dim, k), np.dtype("<f4")), "intercept": ((k,), np.dtype("<f4")),
                "classes": ((k,), np.dtype(f"<U{NAME_MAX_BYTES}")), "penalty": ((), np.dtype("<f8"))}
    arrays = {}
    with _reading(path), zipfile.ZipFile(path) as npz:
        if sorted(npz.namelist()) != sorted(f"{name}.npy" for name in HEAD_ARRAYS):
            _fail(path, "the archive", f"must hold exactly {', '.join(HEAD_ARRAYS)}")
        for name, (shape, dtype) in expected.items():
            with npz.open(f"{name}.npy") as fh:
                arrays[name] = _read_npy(fh, path, shape, dtype)
    if [str(c) for c in arrays["classes"]] != labels:
        _fail(path, "classes", "must be the gallery's labels, in order")
    if not arrays["penalty"] > 0:
        _fail(path, "penalty", "must be above 0")
    return arrays
