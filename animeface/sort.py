"""Sort a folder of pictures into one folder per character, never losing a file.

Stages: walk SRC -> read, hash, decode, detect and crop in a thread pool (OpenCV
and PIL release the GIL) -> embed in batches on the main thread and name the
faces -> place each picture in its folders -> journal each step -> report.

With group_unknown, the pictures with no named face wait (their vectors kept,
not their pixels) until every picture is named; then their faces are grouped by
character (cluster.group) and each picture goes to _unknown/group-NN/ of each
group its faces fall in (01 the largest), or to _unknown/ when none fits a group.
A picture with a named face is placed by its names alone, as without grouping,
and its unknown faces are not grouped, so _unknown/ and its groups hold exactly
the pictures nobody in the gallery is in. The groups are journalled before the
first of those pictures is placed, so a resumed run files the rest into the
same groups rather than grouping what is left anew.

The promises, and how they are kept:
- nothing is overwritten: a copy is written to a new, uniquely named temporary
  file (files.write_file), checked (size and sha256) and then hard-linked to a
  free name, which fails rather than replace a file; an identical file already
  in a folder is not copied again;
- one run at a time: a sort or undo holds the lock of DST/.animeface/, and a second one
  into the same DST is refused;
- nothing is written outside DST: each folder is checked to lie inside it, links
  followed, whatever a gallery's names say;
- only regular files are read (no FIFO, device or link), up to a size limit, and
  the decoding threads share a budget of pixels, so memory stays bounded;
- --move removes a source only after all its copies are checked and the source
  still hashes the same;
- every step is a line in DST/.animeface/journal-*.jsonl, fsynced before the
  step goes on, so an interrupted run resumes where it stopped and the latest
  run, finished or not, can be undone; a run that changed nothing leaves no
  journal behind, so it never hides the run before it (its report, rewritten
  by every run, says where each file is). File names that are not valid UTF-8
  are journalled byte for byte;
- a re-run does no work twice: a picture an earlier run into DST placed from
  the same path, with the same bytes and settings (the recognizer's naming_key,
  the faces mode, the grouping), its copies still there, is placed again by
  that run's record, not decoded or embedded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from . import files, report
from .errors import AnimefaceError, ImageError, InputError
from .io import PixelBudget, available_cores, is_picture, max_pixels, open_file, pipelined, read_file
from .models import sha256_file

UNKNOWN, NOFACE = "_unknown", "_noface"
STATE_DIR = files.STATE_DIR
#: Crops per embedding call. On CPU, Inception-v3 costs less per crop in batches of 4-8 than of
#: 32 (about 15% here); small batches also journal finished files sooner.
EMBED_BATCH = 8
LISTED = 20  # files left in place that the summary names; report.csv lists them all


class SortError(AnimefaceError):
    """A sort or undo cannot go ahead: bad folders, nothing to undo, or a copy that fails its check."""


# -- summaries -------------------------------------------------------------------


@dataclass
class SortSummary:
    """What a sort did: pictures per folder, unreadable files, file operations, time taken."""

    files: int = 0
    folders: Counter = field(default_factory=Counter)
    left: list[tuple[str, str]] = field(default_factory=list)
    copied: int = 0
    identical: int = 0
    removed: int = 0
    resumed: int = 0
    #: When the interrupted run this one carried on had started ("" for a fresh run).
    resumed_from: str = ""
    elapsed: float = 0.0
    dry_run: bool = False
    state_dir: Path | None = None

    @classmethod
    def of(cls, records: list[dict], **kwargs) -> "SortSummary":
        summary = cls(files=len(records), **kwargs)
        for r in records:
            if r["reason"]:
                summary.left.append((r["src"], r["reason"]))
            for p in r["placed"]:
                summary.folders[p["folder"]] += 1
                summary.copied += p["how"] == "copied"
                summary.identical += p["how"] == "identical"
            summary.removed += r["removed"]
        return summary

    def to_dict(self) -> dict:
        """The summary as `sort --json` prints it."""
        return {"dry_run": self.dry_run, "files": self.files, "folders": dict(sorted(self.folders.items())),
                "left": [{"source": path, "reason": why} for path, why in self.left], "copied": self.copied,
                "identical": self.identical, "removed": self.removed, "resumed": self.resumed,
                "elapsed": round(self.elapsed, 3),
                "report": str(self.state_dir / "report.html") if self.state_dir and not self.dry_run else None}

    def __str__(self) -> str:
        head = "dry run, nothing changed:" if self.dry_run else "sorted:"
        lines = [f"{head} {self.files} file(s) in {self.elapsed:.1f} s"
                 + (f" (carried on the interrupted run started {self.resumed_from}: {self.resumed} "
                    "done before the interruption)" if self.resumed_from else "")]
        lines += [f"  {name}/: {n}" for name, n in sorted(self.folders.items()) if not name.startswith("_")]
        lines += [f"  {UNKNOWN}/ (unknown faces only): {self.folders[UNKNOWN]}"]
        lines += [f"  {name}/: {n}" for name, n in sorted(self.folders.items()) if name.startswith(UNKNOWN + "/")]
        lines += [f"  {NOFACE}/ (no face found): {self.folders[NOFACE]}",
                  f"  left in place (not readable images, or failed): {len(self.left)}"]
        lines += [f"    {path}: {why}" for path, why in self.left[:LISTED]]
        if len(self.left) > LISTED:
            lines.append(f"    and {len(self.left) - LISTED} more, listed in report.csv")
        lines.append(f"  {'would copy' if self.dry_run else 'copied'} {self.copied}, "
                     f"already there {self.identical}, sources {'to remove' if self.dry_run else 'removed'} {self.removed}")
        if self.state_dir and not self.dry_run:
            lines.append(f"  report: {self.state_dir / 'report.html'} (and report.csv)")
        return "\n".join(lines)


@dataclass
class UndoSummary:
    """What an undo did, and what it left alone (changed copies, sources it could not put back)."""

    restored: int = 0
    removed: int = 0
    kept: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"restored": self.restored, "removed": self.removed, "dry_run": self.dry_run,
                "kept": [{"path": path, "reason": why} for path, why in self.kept]}

    def __str__(self) -> str:
        if self.dry_run:
            lines = [f"dry run, nothing changed; undo would put back {self.restored} file(s) and remove "
                     f"{self.removed} copy(ies)"]
        else:
            lines = [f"undone: {self.restored} file(s) put back, {self.removed} copy(ies) removed"]
        lines += [f"  left {path}: {why}" for path, why in self.kept]
        return "\n".join(lines)


# -- safe file operations ----------------------------------------------------------


def copy_verified(source: Path, target: Path, sha256: str, size: int) -> None:
    """Copy source to target without ever replacing a file.

    The bytes go to a new temporary file beside target, are fsynced and read
    back; only when both the source as read and the copy match size and sha256
    is the copy linked to target. Raises FileExistsError if target exists,
    SortError if a check fails (the source changed, or the copy is bad) or the
    source is no longer a regular file; nothing is left behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()

    def fill(out):
        try:
            fin = open_file(source, follow_links=False)
        except ImageError as exc:
            raise SortError(f"{exc}; left in place") from None
        with fin:
            for block in iter(lambda: fin.read(1 << 20), b""):
                digest.update(block)
                out.write(block)

    def check(tmp: Path):
        shutil.copystat(source, tmp)
        if digest.hexdigest() != sha256:
            raise SortError(f"{source}: changed while sorting (sha256 differs from when it was read); left in place")
        if tmp.stat().st_size != size or sha256_file(tmp) != sha256:
            raise SortError(f"{target}: the copy does not match its source after writing; source left in place")

    files.write_file(target, fill, check=check)


class Folders:
    """The destination folders' contents: free names and files already there by size and sha256.

    Names are compared case-insensitively (some disks are) and include the names
    this run has taken, so a dry run plans the same names a real run writes.
    """

    def __init__(self):
        self._names: dict[Path, set[str]] = {}
        self._sizes: dict[Path, dict[int, list[Path]]] = {}
        self._hashes: dict[Path, str] = {}

    def _scan(self, folder: Path) -> None:
        if folder in self._names:
            return
        names, sizes = set(), {}
        if folder.is_dir():
            for entry in os.scandir(folder):
                names.add(entry.name.lower())
                if entry.is_file(follow_symlinks=False) and not entry.name.endswith(files.TMP_SUFFIX):
                    sizes.setdefault(entry.stat().st_size, []).append(Path(entry.path))
        self._names[folder], self._sizes[folder] = names, sizes

    def identical(self, folder: Path, size: int, sha256: str) -> Path | None:
        """A file in folder with these exact bytes, if any (hashing only same-size files)."""
        self._scan(folder)
        for path in self._sizes[folder].get(size, []):
            if path not in self._hashes and path.exists():
                self._hashes[path] = sha256_file(path)
            if self._hashes.get(path) == sha256:
                return path
        return None

    def free_name(self, folder: Path, name: str) -> Path:
        """folder/name, or name-1, name-2, ... whichever is not taken; the stem is shortened
        where a name would be too long for the disk."""
        self._scan(folder)
        candidate, n = files.fit_name(name), 0
        while candidate.lower() in self._names[folder]:
            n += 1
            stem, suffix = os.path.splitext(files.fit_name(name, files.NAME_MAX - len(f"-{n}")))
            candidate = f"{stem}-{n}{suffix}"
        return folder / candidate

    def add(self, path: Path, size: int | None = None, sha256: str | None = None) -> None:
        """Record a file this run placed (or, in a dry run, would place); without size, just take the name."""
        self._scan(path.parent)
        self._names[path.parent].add(path.name.lower())
        if size is not None:
            self._sizes[path.parent].setdefault(size, []).append(path)
            self._hashes[path] = sha256


# -- the journal -------------------------------------------------------------------


class Journal:
    """Append-only JSON lines; each is flushed and fsynced before the step it announces.
    Lines are ASCII (every other character escaped), so no character in a name, a line
    or paragraph separator included, can split a record; they are split at newlines only.
    Paths are written losslessly: the undecodable bytes of a file name that is not
    UTF-8 are escaped surrogates, which go back to disk as the bytes they were."""

    def __init__(self, path: Path):
        self.path = path
        torn = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self._fh = open(path, "a", encoding="utf-8", errors="surrogateescape")
        if torn:  # a crash cut the last line short: start a fresh one
            self._fh.write("\n")

    def write(self, op: str, **entry) -> None:
        self._fh.write(json.dumps({"op": op, **entry}) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def read(path: Path) -> list[dict]:
        """The journal's entries; a line cut short by a crash is skipped."""
        entries = []
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").split("\n"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    @staticmethod
    def latest(dst: Path) -> Path | None:
        journals = sorted((dst / STATE_DIR).glob("journal-*.jsonl"))
        return journals[-1] if journals else None

    @staticmethod
    def new_path(dst: Path) -> Path:
        return dst / STATE_DIR / f"journal-{datetime.now():%Y%m%dT%H%M%S.%f}.jsonl"


class _NoJournal:
    """The journal of a dry run: writes nothing."""

    def write(self, op: str, **entry) -> None:
        pass

    def close(self) -> None:
        pass


# -- stage 1: find the files and analyse them in worker threads -------------------


@dataclass
class Picture:
    """One source file after stage 1: its hash, face boxes and crops, or why it is no picture."""

    path: Path
    size: int = 0
    sha256: str = ""
    shape: tuple[int, int] = (0, 0)
    boxes: list = field(default_factory=list)
    crops: list = field(default_factory=list)
    error: str | None = None
    #: The faces, named, and their vectors, when an index (`animeface index`) named them already.
    faces: list | None = None
    vectors: np.ndarray | None = None
    #: The record of an earlier run that placed these same bytes from this path, under the same settings:
    #: the picture is placed again by it, and neither decoded nor embedded.
    before: dict | None = None


def analyse(path: Path, recognizer, faces: str, thumbs: Path | None, budget: PixelBudget,
            placed_before: dict[str, dict] | None = None, index=None) -> Picture:
    """Read the file once and hash it; unless an earlier run placed these bytes (placed_before, by path,
    its copies and thumbnail still there), decode, detect and crop, holding its pixels from the budget,
    and save a thumbnail into thumbs (unless None). Anything but a regular file is left alone.
    With index (index.IndexedPictures), the picture's faces are those the index holds, nothing is
    detected, and the file must be the one indexed (same sha256)."""
    pic = Picture(path)
    try:
        if not is_picture(path):
            raise ImageError(f"{path.name}: not an image ({path.suffix or 'no'} file suffix, no image header)")
        data = read_file(path, path.name, follow_links=False)
        pic.size, pic.sha256 = len(data), hashlib.sha256(data).hexdigest()
        before = (placed_before or {}).get(str(path))
        if before and before["sha256"] == pic.sha256 and _still_there(before, thumbs):
            pic.before, pic.shape = before, tuple(before["shape"])
            return pic
        if index is not None:
            pic.faces, pic.vectors = index.faces(path, pic.sha256)
            pic.boxes = [f.box for f in pic.faces]
        with budget.decoded(data, path.name) as rgb:
            pic.shape = rgb.shape[:2]
            if index is None:
                pic.boxes, pic.crops = recognizer.face_crops(rgb, faces)
            if thumbs is not None:
                report.save_thumbnail(rgb, thumbs / f"{pic.sha256}.jpg")
    except ImageError as exc:
        pic.error = str(exc).removeprefix(f"{path.name}: ")
    return pic


def _still_there(record: dict, thumbs: Path | None) -> bool:
    """Whether every copy a record placed is still a file of its size, and its thumbnail is there."""
    try:
        return (thumbs is None or (thumbs / f"{record['sha256']}.jpg").is_file()) and all(
            os.stat(p["path"]).st_size == record["size"] for p in record["placed"])
    except OSError:
        return False


def placed_before(dst: Path, key: str) -> dict[str, dict]:
    """Source path -> its latest record among the runs into dst made under this placing key (the
    recognizer's naming_key, the faces mode and the grouping) and not undone, for the pictures they
    placed; a re-run places those again without decoding or embedding them."""
    out: dict[str, dict] = {}
    for path in sorted((dst / STATE_DIR).glob("journal-*.jsonl")):
        entries = Journal.read(path)
        if not entries or entries[0].get("placing") != key or any(e["op"] in ("undo", "undone") for e in entries):
            continue
        out.update((e["src"], e) for e in entries if e["op"] == "done" and e["placed"] and not e["reason"])
    return out


# -- stages 2 and 3: name the faces in batches, place the files ----------------------


def sort_folder(recognizer, src, dst, *, move: bool = False, dry_run: bool = False, faces: str = "detect",
                jobs: int | None = None, progress: bool = False, log: Callable[[str], None] | None = None,
                group_unknown: bool = False, similarity: float | None = None, index=None,
                checked: tuple[Path, Path, list[Path]] | None = None) -> SortSummary:
    """Sort every file under src into dst/<character>/, dst/_unknown/ and dst/_noface/.

    A picture goes to the folder of each known character in it; files that are
    not readable pictures stay where they are. Copies by default; move=True
    removes each source once all its copies are checked. dry_run=True changes
    nothing and calls log(line) for each action a real run would take.
    group_unknown=True files the pictures with no named face into
    dst/_unknown/group-01/, group-02/, ... by character (see the module's
    docstring); similarity is the grouping threshold, by default the one
    `animeface cluster` takes from the embedder's calibration. The latest run
    into dst, if it was interrupted (same src and mode), is resumed. With index
    (the folder of an `animeface index` of src), the pictures are placed by the
    faces the index holds, nothing is detected or embedded again (recognizer may
    be None), and a picture it does not hold, or that changed since, is left in
    place. The journal, report.csv and report.html go to dst/.animeface/. Raises
    check_folders' errors (and then makes nothing), SortError when another
    sort or undo into dst is running, or dst cannot be written to, and
    ClusterError when grouping has no threshold. checked: what check_folders
    returned for these folders, when the caller checked them already (src is
    then not walked a second time).
    """
    started = time.monotonic()
    if faces not in ("detect", "auto"):
        raise ValueError(f"faces must be 'detect' or 'auto' for sorting, got {faces!r}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    jobs = jobs or available_cores()
    src, dst, found = checked or check_folders(src, dst, move, group_unknown)
    if index is not None:
        from .index import IndexedPictures

        index = IndexedPictures(index, src)
    threshold = None
    if group_unknown:
        from .cluster import checked, threshold_from

        calibration = index.pair_similarity if index is not None else recognizer.embedder.pair_similarity
        threshold = threshold_from(calibration) if similarity is None else checked(similarity)
    with nullcontext() if dry_run else _lock(dst):
        return _sort(recognizer, src, dst, found, move, dry_run, faces, jobs, progress, log or (lambda line: None),
                     started, threshold, index)


def check_folders(src, dst, move: bool = False, group_unknown: bool = False) -> tuple[Path, Path, list[Path]]:
    """src and dst resolved, and the files found under src, checked before anything is made or loaded:
    InputError when src does not exist or holds no pictures (and no interrupted run of it is left
    to finish), SortError when the folders cannot be used."""
    src, dst = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if not src.exists():
        raise InputError(f"{src}: no such folder; give the folder of pictures to sort")
    if not src.is_dir():
        raise SortError(f"{src}: not a folder; give the folder of pictures to sort")
    if dst == src or dst in src.parents:
        raise SortError(f"{src} lies inside the destination {dst}; sort into a folder outside it")
    if dst.exists() and not dst.is_dir():
        raise SortError(f"{dst}: exists and is not a folder")
    found = files.walk(src, leave_out=dst)
    if not any(map(is_picture, found)) and not _resumable(dst, src, move, group_unknown):
        raise InputError(f"no pictures in {src}; nothing sorted")
    return src, dst, found


def _sort(recognizer, src: Path, dst: Path, found: list[Path], move: bool, dry_run: bool, faces: str, jobs: int,
          progress: bool, log: Callable[[str], None], started: float, threshold: float | None, index) -> SortSummary:
    """The run itself, on the files found under src; threshold is None unless unknown pictures are grouped,
    index None unless the faces come from an index."""
    grouping = threshold is not None
    if not dry_run:
        _remove_leftovers(dst)
    entries = _resumable(dst, src, move, grouping, index)
    finished = [e for e in entries if e["op"] == "done"]
    naming = recognizer.naming_key() if index is None else {"index": str(index.folder)}
    key = hashlib.sha256(json.dumps([naming, faces, threshold]).encode()).hexdigest()
    earlier = placed_before(dst, key)
    if dry_run:
        journal = _NoJournal()
    elif entries:
        journal = Journal(Journal.latest(dst))
        journal.write("resume", at=datetime.now().isoformat(timespec="seconds"))
    else:
        journal = Journal(Journal.new_path(dst))
        journal.write("run", src=str(src), dst=str(dst), move=move, faces=faces, group_unknown=grouping, placing=key,
                      index=str(index.folder) if index else None, at=datetime.now().isoformat(timespec="seconds"))
    done_paths = {e["src"] for e in finished}
    todo = [f for f in found if str(f) not in done_paths]
    placer = _Placer(dst, journal, move, dry_run, log, made={e["dst"]: e["src"] for e in entries if e["op"] == "copy"})
    thumbs = None if dry_run else dst / STATE_DIR / "thumbs"
    budget = PixelBudget(max_pixels())
    records = [{k: v for k, v in e.items() if k != "op"} for e in finished]

    from tqdm import tqdm

    held: list[Unknown] | None = [] if grouping else None
    bar = tqdm(total=len(todo), desc="sort", unit="img", disable=not progress, smoothing=0.1)
    try:
        batch: list[Picture] = []
        pictures = pipelined(lambda p: analyse(p, recognizer, faces, thumbs, budget, earlier, index), todo, jobs,
                             2 * EMBED_BATCH + 4 * jobs)
        for pic in pictures:
            batch.append(pic)
            if index is not None or sum(len(p.crops) for p in batch) >= EMBED_BATCH:
                records += _name_and_place(recognizer, batch, placer, held, index is not None)
                bar.update(len(batch))
                batch = []
        records += _name_and_place(recognizer, batch, placer, held, index is not None)
        bar.update(len(batch))
        bar.close()
        if grouping:
            planned = next((e["groups"] for e in entries if e["op"] == "groups"), None)
            records += _place_groups(held, planned, threshold, placer, journal, progress)
        elapsed = time.monotonic() - started
        journal.write("end", elapsed=round(elapsed, 3))
    finally:
        bar.close()
        journal.close()
    summary = SortSummary.of(records, resumed=len(finished), resumed_from=entries[0].get("at", "?") if entries else "",
                             elapsed=elapsed, dry_run=dry_run,
                             state_dir=dst / STATE_DIR)
    if dry_run:
        return summary
    report.write_reports(dst / STATE_DIR, records, summary)  # every run's report says where each file is now
    if not (summary.copied or summary.removed):  # nothing changed: the run before stays the one to undo
        journal.path.unlink()
    return summary


def _lock(dst: Path) -> files.FolderLock:
    """Make dst's state folder and take its lock, or say clearly why not."""
    state = dst / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        if state.is_symlink() or not files.inside(dst, state):
            raise SortError(f"{state}: is a link; sort keeps its journal inside {dst} only")
        return files.FolderLock(state)
    except BlockingIOError:
        raise SortError(f"{dst}: another sort or undo into this folder is running; "
                        "wait for it to finish, then run this again") from None
    except OSError as exc:
        raise SortError(f"{dst}: cannot write there ({exc.strerror}); choose a folder you can write to") from None


def _remove_leftovers(dst: Path) -> None:
    """Temporary files a killed run left in dst's folders and _unknown/'s group folders (only ours: files.leftovers)."""
    def folders(parent: Path) -> list[Path]:
        return [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]

    unknown = dst / UNKNOWN
    groups = folders(unknown) if unknown.is_dir() and not unknown.is_symlink() else []
    for folder in [dst] + folders(dst) + groups:
        files.remove_leftover_files(folder)


def _resumable(dst: Path, src: Path, move: bool, grouping: bool, index=None) -> list[dict]:
    """The entries of the latest journal in dst if it is an unfinished run of the same src and mode, else []."""
    path = Journal.latest(dst)
    entries = Journal.read(path) if path else []
    if not entries or entries[0].get("op") != "run":
        return []
    head = entries[0]
    if head.get("src") != str(src) or head.get("move") != move or head.get("group_unknown", False) != grouping \
            or head.get("index") != (str(index.folder) if index else None) \
            or any(e["op"] in ("end", "undo") for e in entries):
        return []
    return entries


@dataclass
class Unknown:
    """A picture with faces, none of them named, waiting for the grouping: its faces and their vectors."""

    picture: Picture
    faces: list
    vectors: np.ndarray


def _name_and_place(recognizer, batch: list[Picture], placer: "_Placer", held: list[Unknown] | None,
                    indexed: bool = False) -> list[dict]:
    """Embed the batch's crops in one go, name each picture's faces, and place the pictures; indexed:
    an index named the faces already (pic.faces, pic.vectors). With held (a list) given, pictures
    with faces but no named face go there instead, without their crops."""
    crops = [c for pic in batch for c in pic.crops]
    vectors = None if indexed else recognizer.vectors_for(crops, keep=held is not None)
    records, offset = [], 0
    for pic in batch:
        if pic.before:
            records.append(placer.place_again(pic))
            continue
        if indexed:  # pic.faces is None: unreadable, or not in the index
            named, mine = pic.faces or [], pic.vectors
        else:
            n = len(pic.boxes)
            mine = None if vectors is None else vectors[offset:offset + n]
            named = recognizer.name_faces(mine, pic.boxes)
            offset += n
        if held is not None and named and not any(f.label for f in named):
            pic.crops = []
            held.append(Unknown(pic, named, mine))
        else:
            records.append(placer.place(pic, named))
    return records


def _place_groups(held: list[Unknown], planned: dict | None, threshold: float, placer: "_Placer", journal,
                  progress: bool) -> list[dict]:
    """Group the held pictures' faces and place each picture in its groups' folders.

    The folder of every face is journalled (op "groups") before any picture is
    placed. A resumed run that finds that entry files its pictures by it, and a
    picture the entry does not hold (new, or changed since) goes to _unknown/.
    """
    if planned is None:
        pictures = np.repeat(np.arange(len(held)), [len(h.faces) for h in held])
        folders = iter(group_folders(np.concatenate([h.vectors for h in held]), threshold, pictures) if held else [])
        planned = {str(h.picture.path): {"sha256": h.picture.sha256, "folders": [next(folders) for _ in h.faces]}
                   for h in held}
        journal.write("groups", threshold=threshold, groups=planned)
    from tqdm import tqdm

    records = []
    for h in tqdm(held, desc="sort: unknown groups", unit="img", disable=not progress):
        plan = planned.get(str(h.picture.path))
        fits = plan and plan["sha256"] == h.picture.sha256 and len(plan["folders"]) == len(h.faces)
        records.append(placer.place(h.picture, h.faces, plan["folders"] if fits else None))
    return records


def group_folders(vectors: np.ndarray, threshold: float, pictures) -> list[str | None]:
    """Each face's group folder, _unknown/group-01 for the largest group (three digits from 100
    groups on), or None for a face that fits no group; pictures (an id per face) keeps the
    faces of one picture apart."""
    from .cluster import group

    numbers = group(vectors, threshold, pictures=pictures)
    width = max(2, len(str(numbers.max() + 1)))
    return [f"{UNKNOWN}/group-{n + 1:0{width}d}" if n >= 0 else None for n in numbers.tolist()]


class _Placer:
    """Stage 3: copy (or move) one picture into its folders, journalling each step first."""

    def __init__(self, dst: Path, journal, move: bool, dry_run: bool, log: Callable[[str], None],
                 made: dict[str, str]):
        self.dst, self.journal, self.move, self.dry_run, self.log = dst, journal, move, dry_run, log
        self.made = made  # copy -> its source, for the copies an interrupted attempt of this run made
        self.folders = Folders()

    def place(self, pic: Picture, faces, groups: list[str | None] | None = None) -> dict:
        """Place the picture in the folder of each named face, else of each unknown face's group
        (groups: a folder or None per face), else in _unknown/ or _noface/."""
        groups = groups or [None] * len(faces)
        record = {"src": str(pic.path), "status": "unreadable", "reason": pic.error, "sha256": pic.sha256,
                  "size": pic.size, "shape": list(pic.shape),
                  "faces": [_face_record(f, g) for f, g in zip(faces, groups)], "placed": [], "removed": False}
        if pic.error:
            self.log(f"leave {pic.path}: {pic.error}")
            self.journal.write("done", **record)
            return record
        names = list(dict.fromkeys(f.label for f in faces if f.label))
        record["status"] = "sorted" if names else "unknown" if faces else "noface"
        return self._file(pic, record, names or sorted(set(filter(None, groups))) or [UNKNOWN if faces else NOFACE])

    def place_again(self, pic: Picture) -> dict:
        """Place a picture an earlier run placed (pic.before) into the same folders, with the faces it
        found then: its copies there are found, not written again."""
        record = {**{k: v for k, v in pic.before.items() if k != "op"}, "placed": [], "removed": False}
        return self._file(pic, record, [p["folder"] for p in pic.before["placed"]])

    def _file(self, pic: Picture, record: dict, folders: list[str]) -> dict:
        """Put the picture into each folder (and with move, remove its source), filling in and journalling
        its record; a failure leaves the source in place, said in the record."""
        try:
            for folder in folders:
                record["placed"].append(self._put(pic, folder))
            if self.move:
                self._remove_source(pic)
                record["removed"] = True
        except (AnimefaceError, OSError) as exc:  # e.g. a folder that cannot be written: the next file
            record["reason"] = str(exc) if not isinstance(exc, OSError) or not exc.filename \
                else f"{exc.filename}: {exc.strerror}"
            self.log(f"leave {pic.path}: {record['reason']}")
        self.journal.write("done", **record)
        return record

    def _put(self, pic: Picture, folder: str) -> dict:
        where = self.dst / folder
        if not files.inside(self.dst, where):
            raise SortError(f"{where}: leads outside {self.dst} (a link, or a character name that is not a "
                            "plain folder name); left in place")
        existing = self.folders.identical(where, pic.size, pic.sha256)
        if existing:
            self.journal.write("same", src=str(pic.path), dst=str(existing), sha256=pic.sha256, size=pic.size)
            self.log(f"keep {pic.path}: identical file already at {existing}")
            # copied by this run before an interruption (the copy journalled, its picture not yet done)
            copied = self.made.get(str(existing)) == str(pic.path)
            return {"folder": folder, "path": str(existing), "how": "copied" if copied else "identical"}
        while True:
            target = self.folders.free_name(where, pic.path.name)
            self.journal.write("copy", src=str(pic.path), dst=str(target), sha256=pic.sha256, size=pic.size)
            try:
                if not self.dry_run:
                    copy_verified(pic.path, target, pic.sha256, pic.size)
                break
            except FileExistsError:  # someone else took the name meanwhile: the next one
                self.folders.add(target)
        self.folders.add(target, pic.size, pic.sha256)
        self.log(f"copy {pic.path} -> {target}")
        return {"folder": folder, "path": str(target), "how": "copied"}

    def _remove_source(self, pic: Picture) -> None:
        if not self.dry_run:
            if _sha256_regular(pic.path) != pic.sha256:
                raise SortError(f"{pic.path}: changed while sorting; copies kept and the source left in place")
            pic.path.unlink()
        self.log(f"remove {pic.path} (every copy checked)")


def _sha256_regular(path: Path) -> str:
    """The sha256 of a regular file; anything else (a link, a FIFO put in its place) is an ImageError."""
    h = hashlib.sha256()
    with open_file(path, follow_links=False) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _face_record(face, group: str | None = None) -> dict:
    """A face as the journal and the report keep it; group is the folder of its group, if it has one."""
    best = face.candidates[0] if face.candidates else None
    return {"box": list(face.box), "label": face.label, "score": round(face.score, 4),
            "best": [best[0], round(best[1], 4)] if best else None, "reason": face.reason,
            **({"group": group} if group else {})}


# -- undo ----------------------------------------------------------------------------


def undo(dst, *, dry_run: bool = False, log: Callable[[str], None] | None = None) -> UndoSummary:
    """Reverse the latest sort into dst, finished or interrupted.

    Sources that are gone (moved by the run) are put back, copied back from a
    checked copy and never over a file; then the copies the run made are
    removed if they are unchanged. A copy that changed, or that holds a source
    which could not be put back, is kept and listed. The report and its
    thumbnails go too. Safe to repeat, and temporary files left by a killed
    undo are removed by the next. dry_run: change nothing, and say what an
    undo would do.
    """
    dst = Path(dst).expanduser().resolve()
    if Journal.latest(dst) is None:
        raise SortError(f"{dst}: no sort journal in {dst / STATE_DIR}, so nothing to undo")
    with _lock(dst):
        return _undo(dst, dry_run, log or (lambda line: None))


def _undo(dst: Path, dry_run: bool, log: Callable[[str], None]) -> UndoSummary:
    path = Journal.latest(dst)
    entries = Journal.read(path)
    if any(e["op"] == "undone" for e in entries):
        raise SortError(f"{dst}: the latest sort ({path.name}) is already undone")
    would = "would " if dry_run else ""
    journal = None if dry_run else Journal(path)
    if not dry_run:
        journal.write("undo", at=datetime.now().isoformat(timespec="seconds"))  # from now on, never resume this run
        _remove_leftovers(dst)
    copies = [e for e in entries if e["op"] == "copy"]
    holders: dict[str, list[dict]] = {}
    for e in copies + [e for e in entries if e["op"] == "same"]:
        holders.setdefault(e["sha256"], []).append(e)
    summary, stranded = UndoSummary(dry_run=dry_run), set()
    for src, sha in {e["src"]: e["sha256"] for e in entries if e["op"] in ("copy", "same")}.items():
        src = Path(src)
        if not dry_run:
            files.remove_leftover_files(src.parent, of=src.name)  # of an undo that was killed
        if src.is_file() and sha256_file(src) == sha:
            continue
        if os.path.lexists(src):
            stranded.add(sha)
            summary.kept.append((str(src), "different bytes are at this path now; its sorted copies are kept"))
            continue
        restorable = any(map(_unchanged, holders[sha])) if dry_run else _restore(src, holders[sha])
        if restorable:
            summary.restored += 1
            log(f"{would}put back {src}")
        else:
            stranded.add(sha)
            summary.kept.append((str(src), "could not be put back: no unchanged copy of it is left"))
    for e in copies:
        copy = Path(e["dst"])
        if not copy.is_file():
            continue
        if not files.inside(dst, copy):
            summary.kept.append((str(copy), f"lies outside {dst} now (through a link); left alone"))
        elif e["sha256"] in stranded:
            summary.kept.append((str(copy), "holds a file that could not be put back"))
        elif sha256_file(copy) != e["sha256"]:
            summary.kept.append((str(copy), "changed since the sort"))
        else:
            summary.removed += 1
            log(f"{would}remove {copy}")
            if dry_run:
                continue
            copy.unlink()
            folder = copy.parent  # and the folders the sort made that are now empty: _unknown/group-01/, _unknown/
            while folder != dst and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
    if dry_run:
        return summary
    if not summary.kept:
        journal.write("undone", at=datetime.now().isoformat(timespec="seconds"))
    journal.close()
    for name in ("report.csv", "report.html"):  # they told where the undone run put each file
        (dst / STATE_DIR / name).unlink(missing_ok=True)
    shutil.rmtree(dst / STATE_DIR / "thumbs", ignore_errors=True)
    return summary


def _restore(src: Path, holders: list[dict]) -> bool:
    """Copy src back from the first unchanged file holding its bytes."""
    for e in holders:
        if _unchanged(e):
            try:
                copy_verified(Path(e["dst"]), src, e["sha256"], e["size"])
                return True
            except (AnimefaceError, OSError):  # FileExistsError included
                continue
    return False


def _unchanged(entry: dict) -> bool:
    """Whether the file a journal entry copied to still holds its bytes unchanged."""
    holder = Path(entry["dst"])
    return holder.is_file() and holder.stat().st_size == entry["size"] and sha256_file(holder) == entry["sha256"]
