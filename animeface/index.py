"""Index a collection of pictures on Ray Data: every face of every picture, with its box, vector and
name, one row per face in a Parquet dataset that pandas, polars or DuckDB read.

Stages, the same as sort's: walk SRC (files.walk) on the driver, leaving out the pictures that a
finished part already holds -> read, hash, decode, detect and crop each picture (sort.analyse,
Recognizer.face_crops) in Ray tasks -> embed and name the faces (Recognizer.vectors_for, name_faces)
in a pool of actors, each of which loads the network once -> the driver gathers each picture's rows
and writes them a part at a time.

Ray starts on this machine and stops at the end, unless an address (--address, or RAY_ADDRESS) names
a running cluster to join: the same code runs either way.

Exactly once: only the driver writes. A part holds whole pictures, and is written to a temporary file
that is then linked to its name (files.write_file), so a reader never finds half of one; a run that
is killed loses only the part it was gathering, and a rerun indexes just the pictures that no
finished part holds. Rows that Ray hands over twice (a task run again after its node died) are
dropped, by picture and face.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import files
from .errors import AnimefaceError
from .models import DEFAULT_DETECTOR, STRANGER_REFUSAL
from .quiet import native_stderr_silenced

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = 2
#: The key of the index's own description in each part's Parquet metadata.
METADATA_KEY = b"animeface"
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
#: Pictures per part file: a killed run loses at most the part it was gathering.
PART_PICTURES = 1000
#: Pictures per decoding-and-detection task.
DETECT_BATCH = 8
#: Memory Ray's scheduler sets aside for each stage's worker, above the peaks measured by
#: benchmarks/index_scale.py (a detection worker about 1 GB: the detector and one decoded picture,
#: whose pixels sort's PixelBudget bounds; an embedder about 570 MB: the network). Being different,
#: they also keep Ray from fusing the two stages into one.
DETECT_MEMORY = 3 << 29
EMBED_MEMORY = 3 << 28
#: Ray's share of a CPU for each task and actor: both stages must fit on a one-CPU machine at once.
STAGE_CPUS = 0.5


class IndexingError(AnimefaceError):
    """An index cannot be written or read: a bad --out folder, or parts made with other settings."""


@dataclass(frozen=True)
class Settings:
    """What every worker needs to build the same Recognizer as the driver, and what the index records."""

    gallery: str
    gallery_revision: str | None
    backbone: str | None
    projection: str | None
    cascade: str | None
    detector: str
    stranger_refusal: float
    faces: str
    #: The driver's ANIMEFACE_* environment (the detector's weights, the cache), given to every worker.
    environment: tuple = ()


@dataclass
class IndexSummary:
    """What a run did: pictures indexed and skipped, faces found, files that could not be read."""

    pictures: int = 0
    faces: int = 0
    noface: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    already: int = 0
    parts: int = 0
    elapsed: float = 0.0

    def __str__(self) -> str:
        rate = f", {self.pictures / self.elapsed:.1f} pictures/s" if self.elapsed and self.pictures else ""
        return (f"indexed {self.pictures} picture(s) in {self.elapsed:.1f} s{rate}: {self.faces} face(s), "
                f"{self.noface} picture(s) with no face, {len(self.failed)} unreadable; "
                f"{self.already} already indexed; {self.parts} part(s) written")


# -- the table ---------------------------------------------------------------------------


def schema(dim: int, description: dict | None = None) -> "pa.Schema":
    """The columns of an index with dim-dimensional vectors; description goes into the metadata."""
    import pyarrow as pa

    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),            # null when the file could not be read
        pa.field("width", pa.int32()),               # the picture's size in pixels
        pa.field("height", pa.int32()),
        pa.field("faces", pa.int32(), nullable=False),  # faces in the picture: its rows, or 0 for its one row
        pa.field("face", pa.int32()),                # this face's number in the picture; null: no face
        pa.field("box", pa.list_(pa.int32(), 4)),    # x, y, w, h; null: no face
        pa.field("box_score", pa.float32()),
        pa.field("box_angle", pa.float32()),        # the turn that sets the face upright (Box.angle)
        pa.field("whole_picture", pa.bool_()),       # the whole picture taken as a face crop
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("label", pa.string()),              # null: unknown, or no gallery
        pa.field("score", pa.float32()),             # null without a gallery
        pa.field("candidates", pa.list_(pa.struct([("name", pa.string()), ("score", pa.float32())]))),
        pa.field("error", pa.string()),              # why the file could not be read; null otherwise
    ]
    metadata = {METADATA_KEY: json.dumps(description).encode()} if description is not None else None
    return pa.schema(fields, metadata=metadata)


def read_index(folder: os.PathLike) -> "pa.Table":
    """The index in folder as one pyarrow Table, one row per face (see schema()); its schema's metadata
    holds the index's description (schema_version, embedder, gallery_sha256, ...) under b"animeface"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    parts = _parts(folder)
    if not parts:
        raise IndexingError(f"{folder}: no index here (no {PART_PREFIX}*{PART_SUFFIX} files); "
                            "make one with 'animeface index SRC --out DIR'")
    description = _description(parts, folder)
    tables = [pq.read_table(p) for p in parts]
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables]).replace_schema_metadata(
        {METADATA_KEY: json.dumps(description).encode()})


def index_clusters(folder: os.PathLike, threshold: float | None = None):
    """Group the unknown faces of the index in folder by character (cluster.group) from their stored
    vectors: nothing is decoded or embedded again. Faces the index names are set aside, as
    Recognizer.cluster sets aside those its gallery names. threshold defaults to the one from the
    embedder's calibration, recorded in the index. Returns (Clusters, the embedder's description,
    how many pictures the index holds)."""
    import pyarrow.compute as pc

    from .cluster import ClusterFace, Clusters, checked, group, threshold_from

    table = read_index(folder)
    description = json.loads(table.schema.metadata[METADATA_KEY])
    threshold = threshold_from(description.get("pair_similarity")) if threshold is None else checked(threshold)
    failed = [f"{r['path']}: {r['error']}" for r in table.filter(pc.is_valid(table["error"]))
              .select(["path", "error"]).to_pylist()]
    faces = table.filter(pc.is_valid(table["vector"]))
    rows = faces.select(["path", "box", "sha256", "label"]).to_pylist()
    unknown = np.array([r["label"] is None for r in rows], bool)
    vectors = faces["vector"].combine_chunks().values.to_numpy(zero_copy_only=False).reshape(len(rows), -1)
    named = [(ClusterFace(r["path"], r["box"], r["sha256"]), r["label"]) for r in rows if r["label"] is not None]
    found = [ClusterFace(r["path"], r["box"], r["sha256"]) for r in rows if r["label"] is None]
    pictures = np.unique([f.source for f in found], return_inverse=True)[1] if found else []
    vectors = np.ascontiguousarray(vectors[unknown], np.float32)
    return Clusters(found, vectors, group(vectors, threshold, pictures=pictures), threshold, named, failed), \
        description["embedder"], len(pc.unique(table["path"]))


class IndexedPictures:
    """The faces an index holds for the pictures under one folder, named and with their vectors, for
    sort --index: nothing is detected or embedded again."""

    def __init__(self, folder: os.PathLike, under: Path):
        import pyarrow.compute as pc

        from .boxes import Box
        from .recognizer import Face, WholePicture

        self.folder = Path(folder).expanduser().resolve()
        table = read_index(self.folder)
        self.pair_similarity = json.loads(table.schema.metadata[METADATA_KEY]).get("pair_similarity")
        table = table.filter(pc.starts_with(table["path"], str(under).rstrip(os.sep) + os.sep))
        vectors = table["vector"].combine_chunks()
        self._pictures: dict[str, tuple[str | None, str | None, list, list]] = {}
        for i, r in enumerate(table.drop_columns(["vector"]).to_pylist()):
            sha256, error, faces, rows = self._pictures.setdefault(r["path"], (r["sha256"], r["error"], [], []))
            if r["box"] is not None:
                angle = r.get("box_angle") or 0.0  # an index of schema 1 has no turns
                box = (WholePicture if r["whole_picture"] else Box)(*r["box"], r["box_score"], angle)
                faces.append(Face(box, r["label"], 1.0 if r["score"] is None else r["score"],
                                  [(c["name"], c["score"]) for c in r["candidates"] or []]))
                rows.append(i)
        self._vectors = vectors

    def faces(self, path: Path, sha256: str) -> tuple[list, np.ndarray | None]:
        """The picture's faces as indexed, and their vectors; an ImageError when the index does not
        hold it, could not read it either, or holds other bytes at that path."""
        from .errors import ImageError

        found = self._pictures.get(str(path))
        if found is None:
            raise ImageError(f"{path.name}: not in the index {self.folder}; index it first, or sort without --index")
        indexed_sha256, error, faces, rows = found
        if error:
            raise ImageError(f"{path.name}: {error}")
        if indexed_sha256 != sha256:
            raise ImageError(f"{path.name}: changed since it was indexed; index it again, or sort without --index")
        if not rows:
            return [], None
        chosen = self._vectors.take(rows)
        return faces, chosen.values.to_numpy(zero_copy_only=False).reshape(len(rows), -1).astype(np.float32)


def _parts(folder: Path) -> list[Path]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(folder / n for n in names if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX))


def _description(parts: list[Path], folder: Path) -> dict:
    """The description every part carries; parts that disagree (made with other settings) are an error."""
    import pyarrow.parquet as pq

    found = None
    for part in parts:
        try:
            raw = (pq.read_schema(part).metadata or {}).get(METADATA_KEY)
            description = json.loads(raw) if raw else None
        except Exception as exc:  # noqa: BLE001 - pyarrow's many errors for a file that is not Parquet
            raise IndexingError(f"{part}: not a readable part of an index ({exc})") from exc
        if not isinstance(description, dict):
            raise IndexingError(f"{part}: not a part of an animeface index (no description in its metadata)")
        if found is not None and description != found:
            raise IndexingError(f"{folder}: its parts were made with different settings ({parts[0].name} and "
                                f"{part.name}); index into separate folders")
        found = description
    return found


# -- the workers ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _recognizer(settings: Settings):
    """The Recognizer these settings make, built once per process (a worker keeps it for every batch).
    A worker's gallery must be the one the driver read (settings.gallery_revision)."""
    from .recognizer import Recognizer

    os.environ.update(dict(settings.environment))
    rec = Recognizer(settings.gallery, backbone=settings.backbone, projection=settings.projection,
                     cascade=settings.cascade, detector=settings.detector,
                     stranger_refusal=settings.stranger_refusal, progress=False)
    if settings.gallery_revision is not None and rec.gallery.revision != settings.gallery_revision:
        raise IndexingError(f"{settings.gallery}: the gallery changed while indexing; run the command again")
    return rec


@lru_cache(maxsize=1)
def _budget():
    """The pixels this worker process may hold decoded at once (sort's PixelBudget)."""
    from .io import PixelBudget, max_pixels

    return PixelBudget(max_pixels())


def detect_batch(batch: "pa.Table", settings: Settings) -> "pa.Table":
    """Ray task: read, decode, detect and crop each picture of the batch (sort.analyse). One row
    per face, with its crop's pixels, or one row with no box for a picture with no face or an
    unreadable file."""
    import pyarrow as pa

    from .recognizer import WholePicture
    from .sort import analyse

    rec = _recognizer(settings)
    rows = {name: [] for name in ("path", "sha256", "width", "height", "faces", "face", "box", "box_score",
                                  "box_angle", "whole_picture", "crop", "error")}

    def add(pic, face, box, crop):
        for name, value in (("path", str(pic.path)), ("sha256", pic.sha256 or None),
                            ("width", pic.shape[1] if not pic.error else None),
                            ("height", pic.shape[0] if not pic.error else None),
                            ("faces", len(pic.boxes)), ("face", face),
                            ("box", list(box) if box is not None else None),
                            ("box_score", box.score if box is not None else None),
                            ("box_angle", box.angle if box is not None else None),
                            ("whole_picture", isinstance(box, WholePicture) if box is not None else None),
                            ("crop", crop.tobytes() if crop is not None else None), ("error", pic.error)):
            rows[name].append(value)

    for path in batch.column("path").to_pylist():
        pic = analyse(Path(path), rec, settings.faces, None, _budget())
        if pic.error or not pic.boxes:
            pic.boxes = []
            add(pic, None, None, None)
        for i, (box, crop) in enumerate(zip(pic.boxes, pic.crops)):
            add(pic, i, box, crop)
    types = {"width": pa.int32(), "height": pa.int32(), "faces": pa.int32(), "face": pa.int32(),
             "box": pa.list_(pa.int32(), 4), "box_score": pa.float32(), "box_angle": pa.float32(),
             "crop": pa.binary()}
    return pa.table({name: pa.array(values, types.get(name)) for name, values in rows.items()})


class EmbedFaces:
    """Ray actor: embeds the crops of a batch of rows and names the faces, with the network loaded once."""

    def __init__(self, settings: Settings):
        self.rec = _recognizer(settings)
        self.schema = schema(self.rec.embedder.dim)

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        import pyarrow as pa

        from .boxes import Box
        from .recognizer import WholePicture

        size, dim = self.rec.embedder.input_size, self.rec.embedder.dim
        crops = batch.column("crop").to_pylist()
        has_face = [c is not None for c in crops]
        vectors = self.rec.vectors_for([np.frombuffer(c, np.uint8).reshape(size, size, 3) for c in crops if c],
                                       keep=True)
        boxes = [(WholePicture if whole else Box)(*box, score, angle)
                 for box, score, angle, whole in zip(batch.column("box").to_pylist(),
                                                     batch.column("box_score").to_pylist(),
                                                     batch.column("box_angle").to_pylist(),
                                                     batch.column("whole_picture").to_pylist()) if box is not None]
        named = iter(self.rec.name_faces(vectors, boxes) if self.rec.characters else [])
        vector_rows = iter([] if vectors is None else vectors)
        vector, label, score, candidates = [], [], [], []
        for face in has_face:
            found = next(named, None) if face else None
            vector.append(next(vector_rows) if face else None)
            label.append(found.label if found else None)
            score.append(found.score if found else None)
            candidates.append([{"name": n, "score": s} for n, s in found.candidates] if found else None)
        flat = np.concatenate([v if v is not None else np.zeros(dim, np.float32) for v in vector]) if vector \
            else np.zeros(0, np.float32)
        columns = {name: batch.column(name) for name in batch.column_names if name != "crop"}
        columns.update(vector=pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim,
                                                                mask=pa.array([v is None for v in vector])),
                       label=label, score=score, candidates=candidates)
        return pa.table({f.name: pa.array(columns[f.name], f.type) if isinstance(columns[f.name], list)
                         else columns[f.name].cast(f.type) for f in self.schema}, schema=self.schema)


# -- the driver ----------------------------------------------------------------------------


def index_pictures(sources, out, *, gallery: os.PathLike | None = None, backbone: str | None = None,
                   projection: str | None = "default", cascade: str | None = None, detector: str = DEFAULT_DETECTOR,
                   stranger_refusal: float = STRANGER_REFUSAL, faces: str = "auto", address: str | None = None,
                   num_cpus: int | None = None, part_pictures: int = PART_PICTURES, progress: bool = False,
                   log=None) -> IndexSummary:
    """Index every picture under sources (files, or folders walked) into the folder out, on Ray.

    The faces are named against the gallery (default: the default gallery) when it holds any
    characters; otherwise only their vectors are written. backbone, projection, cascade, detector and
    stranger_refusal are the Recognizer's, and every worker builds the same one. address: a Ray
    cluster to join (host:port); None joins RAY_ADDRESS if set, else starts Ray on this machine (with
    num_cpus CPUs, default all) and stops it at the end. Pictures that a finished part in out already
    holds are skipped, so running it again carries on. log(line) is called for each file that could
    not be read. Raises IndexingError for an out folder that holds other files, parts made with
    other settings, or another run into it.
    """
    from .backbone import resolve_backbone
    from .recognizer import _check_faces, default_gallery_path

    started = time.monotonic()
    out = Path(out).expanduser().resolve()
    _check_faces(faces)
    if part_pictures < 1:
        raise ValueError(f"part_pictures must be at least 1, got {part_pictures}")
    sources = [Path(s).expanduser().resolve() for s in sources]
    for src in sources:
        if not os.path.lexists(src):
            raise IndexingError(f"{src}: no such file or folder")
    if projection not in ("default", None):
        projection = str(Path(projection).expanduser().resolve())
    settings = Settings(str(Path(gallery or default_gallery_path()).expanduser().resolve()), None,
                        resolve_backbone(backbone), projection, cascade, detector, stranger_refusal, faces,
                        tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("ANIMEFACE_"))))
    recognizer = _recognizer(settings)
    settings = replace(settings, gallery_revision=recognizer.gallery.revision)
    description = _describe(recognizer, settings)
    with _lock(out):
        files.remove_leftover_files(out)
        parts = _parts(out)
        if parts and _description(parts, out) != description:
            raise IndexingError(f"{out}: holds an index made with other settings (gallery, embedder, detector, "
                                "faces, or an earlier version of animeface); index into a new folder, or run with "
                                "the settings it was made with")
        done = _indexed_paths(parts)
        todo = list(dict.fromkeys(p for src in sources for p in (files.walk(src, out) if src.is_dir() else [src])))
        summary = IndexSummary(already=sum(str(p) in done for p in todo))
        todo = [p for p in todo if str(p) not in done]
        if todo:
            with native_stderr_silenced():
                _prepare(recognizer, faces)
            _run(todo, settings, out, description, address, num_cpus, part_pictures, progress,
                 log or (lambda line: None), summary)
    summary.elapsed = time.monotonic() - started
    return summary


def _describe(recognizer, settings: Settings) -> dict:
    """What the index records in its metadata, and what a rerun must match."""
    named = bool(recognizer.characters)
    return {"schema_version": SCHEMA_VERSION, "embedder": recognizer.run_description(),
            "dim": recognizer.embedder.dim, "pair_similarity": recognizer.embedder.pair_similarity,
            "gallery_sha256": gallery_sha256(Path(settings.gallery)) if named else None,
            "stranger_refusal": settings.stranger_refusal if named else None,
            "detector": settings.detector, "faces": settings.faces}


def gallery_sha256(folder: Path) -> str:
    """One sha256 over a saved gallery's files, names and bytes."""
    from .models import sha256_file

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _lock(out: Path) -> files.FolderLock:
    """Make out (refusing one that holds other files) and take its lock."""
    if os.path.lexists(out) and not out.is_dir():
        raise IndexingError(f"{out}: exists and is not a folder; give a new or empty folder for the index")
    try:
        out.mkdir(parents=True, exist_ok=True)
        ours = set(files.leftovers(out))
        foreign = [n for n in sorted(os.listdir(out))
                   if not (n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)) and out / n not in ours]
        if foreign:
            raise IndexingError(f"{out}: holds files that are not part of an index (such as {foreign[0]!r}); "
                                "give a new or empty folder, or the folder of an earlier index run")
        return files.FolderLock(out)
    except BlockingIOError:
        raise IndexingError(f"{out}: another index run into this folder is running; wait for it to finish") from None
    except OSError as exc:
        raise IndexingError(f"{out}: cannot write there ({exc.strerror}); choose a folder you can write to") from None


def _indexed_paths(parts: list[Path]) -> set[str]:
    import pyarrow.parquet as pq

    return {p for part in parts for p in pq.read_table(part, columns=["path"]).column("path").to_pylist()}


def _prepare(recognizer, faces: str) -> None:
    """Run both networks once here, so that a missing model file is said at once, and each is
    converted once (into the cache) before the workers load it."""
    size = recognizer.embedder.input_size
    blank = np.full((size, size, 3), 255, np.uint8)
    if faces != "whole":
        recognizer.detector.detect(blank)
    recognizer.vectors_for([blank], keep=True)


def _run(todo: list[Path], settings: Settings, out: Path, description: dict, address: str | None,
         num_cpus: int | None, part_pictures: int, progress: bool, log, summary: IndexSummary) -> None:
    import logging

    import pyarrow as pa
    import ray
    import ray.data
    from tqdm import tqdm

    from .sort import EMBED_BATCH

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, num_cpus=num_cpus if address == "local" else None,
                 include_dashboard=False if address == "local" else None, log_to_driver=False,
                 logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "start Ray on this machine" if address == "local" else f"join the Ray cluster at {address}"
        raise IndexingError(f"could not {where} ({exc})") from None
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        chunks = [pa.table({"path": [str(p) for p in todo[i:i + DETECT_BATCH]]}) for i in range(0, len(todo), DETECT_BATCH)]
        rows = (ray.data.from_arrow(chunks)
                .map_batches(detect_batch, fn_args=(settings,), batch_size=None, batch_format="pyarrow",
                             num_cpus=STAGE_CPUS, memory=DETECT_MEMORY)
                .map_batches(EmbedFaces, fn_constructor_args=(settings,), batch_size=EMBED_BATCH,
                             batch_format="pyarrow", num_cpus=STAGE_CPUS, memory=EMBED_MEMORY,
                             compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus // 2))))
        writer = _PartWriter(out, description, part_pictures, summary, log)
        with tqdm(total=len(todo), desc="index", unit="img", disable=not progress, smoothing=0.05) as bar:
            for table in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
                bar.update(writer.take(table))
            writer.flush()
    except ray.exceptions.RayError as exc:  # a worker failed for good; what Ray says last is why
        raise IndexingError(f"the run stopped ({str(exc).strip().splitlines()[-1]}); the {summary.parts} part(s) "
                            f"written to {out} are kept: run the same command again to carry on") from exc
    finally:
        ray.shutdown()


class _PartWriter:
    """Gathers rows until each picture's are all in, and writes whole pictures a part at a time."""

    def __init__(self, out: Path, description: dict, part_pictures: int, summary: IndexSummary, log):
        self.out, self.part_pictures, self.summary, self.log = out, part_pictures, summary, log
        self.metadata = {METADATA_KEY: json.dumps(description).encode()}
        self.run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.pending: dict[str, dict[int, tuple]] = {}  # path -> {face: (table, row)}
        self.ready: list[tuple] = []
        self.pictures = 0
        self.written: set[str] = set()

    def take(self, table: "pa.Table") -> int:
        """Take a batch of rows; returns how many pictures it completed."""
        completed = 0
        paths, numbers, counts = (table.column(c).to_pylist() for c in ("path", "face", "faces"))
        for row, (path, number, count) in enumerate(zip(paths, numbers, counts)):
            if path in self.written:
                continue  # delivered twice: the picture is already in a part
            mine = self.pending.setdefault(path, {})
            mine[-1 if number is None else number] = (table, row)
            if len(mine) == max(count, 1):
                self.ready += [mine[k] for k in sorted(mine)]
                self.written.add(path)
                del self.pending[path]
                self.pictures += 1
                completed += 1
                self._count(table, row, count)
                if self.pictures >= self.part_pictures:
                    self.flush()
        return completed

    def _count(self, table: "pa.Table", row: int, count: int) -> None:
        error = table.column("error")[row].as_py()
        if error:
            path = table.column("path")[row].as_py()
            self.summary.failed.append((path, error))
            self.log(f"{path}: {error}")
        elif count:
            self.summary.faces += count
        else:
            self.summary.noface += 1
        self.summary.pictures += 1

    def flush(self) -> None:
        """Write the pictures gathered so far as one part: a temporary file, then linked to its name."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.ready:
            return
        by_table: dict[int, tuple] = {}
        for table, row in self.ready:
            by_table.setdefault(id(table), (table, []))[1].append(row)
        part = pa.concat_tables([t.take(rows) for t, rows in by_table.values()]).replace_schema_metadata(self.metadata)
        target = self.out / f"{PART_PREFIX}{self.run}-{self.summary.parts:06d}{PART_SUFFIX}"
        files.write_file(target, lambda fh: pq.write_table(part, fh, compression="zstd"))
        self.summary.parts += 1
        self.ready, self.pictures = [], 0
