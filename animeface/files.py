"""Writing files without losing any: the one mechanism sort, its reports and the gallery save use.

- Every write goes to a temporary file created exclusively (O_EXCL) under a unique
  name, ``.NAME.XXXXXXXX.animeface-tmp``, so two writers never share one and a
  user's own file is never truncated; it is fsynced, then linked to its final name
  (which fails rather than replace a file) or, for our own state files, renamed over it.
- Temporary files and folders left by a killed run are recognised by that name and
  removed by the next run; nothing named otherwise is ever removed.
- A folder's lock makes a second run into the same folder refuse, or a second writer of a
  gallery wait, rather than interleave.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

TMP_SUFFIX = ".animeface-tmp"
#: The folder where sort keeps its journal, reports and thumbnails, inside its destination.
STATE_DIR = ".animeface"
#: The longest file name most file systems take, in bytes.
NAME_MAX = 255
#: How much of a target's name its temporary file's name keeps, in bytes.
_TMP_STEM = 100
#: tempfile's unique part: eight of these characters.
_TEMP = re.compile(r"\.(?P<of>.*)\.[a-z0-9_]{8}" + re.escape(TMP_SUFFIX), re.DOTALL)
#: How much read_npy reads at a time.
_CHUNK = 1 << 24
_NO_HARDLINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK)


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """name, its stem shortened (whole characters) until it takes at most limit bytes on disk."""
    stem, suffix = os.path.splitext(name)
    if len(os.fsencode(suffix)) > limit // 2:
        stem, suffix = name, ""
    while stem and len(os.fsencode(stem + suffix)) > limit:
        stem = stem[:-1]
    return stem + suffix


def _prefix(target_name: str) -> str:
    return f".{fit_name(target_name, _TMP_STEM)}."


def write_file(target: Path, fill: Callable[[BinaryIO], None], *, replace: bool = False,
               check: Callable[[Path], None] | None = None) -> None:
    """Write target through a new temporary file beside it: fill(fh) writes the bytes, which are
    fsynced; check(tmp), if given, may raise to abandon the write. Then the file takes target's
    name: linked, so FileExistsError if target exists, or with replace=True renamed over it.
    The temporary file never outlives the call."""
    fd, name = tempfile.mkstemp(prefix=_prefix(target.name), suffix=TMP_SUFFIX, dir=target.parent)
    tmp = Path(name)
    try:
        os.chmod(fd, 0o666 & ~_umask())  # an ordinary new file's mode, not mkstemp's private 0600
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if check:
            check(tmp)
        if replace:
            os.replace(tmp, target)
        else:
            _link(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_named(target: Path, fill: Callable[[Path], None]) -> None:
    """write_file for writers that need a file name ending as target's does (OpenCV's video writer
    picks the format by it): fill(path) writes path, in a new temporary folder beside target;
    then the file is fsynced and linked to target (FileExistsError if it exists). The folder never
    outlives the call."""
    folder = temp_dir(target)
    try:
        tmp = folder / ("written" + target.suffix)
        fill(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _link(tmp, target)
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


def write_bytes(target: Path, data: bytes, *, replace: bool = False) -> None:
    """Write data to target atomically: readers see no file (or the old one, with replace=True)
    or the whole new one, never a part. Without replace, an existing target is FileExistsError."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    write_file(Path(target), lambda fh: fh.write(data), replace=replace)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _link(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)
    except OSError as exc:
        if exc.errno not in _NO_HARDLINKS:
            raise
        if os.path.lexists(target):  # no hard links here (e.g. FAT): check, then rename
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from None
        os.rename(tmp, target)
        return
    tmp.unlink()


def temp_dir(target: Path) -> Path:
    """A new, empty, uniquely named folder beside target, to build target's contents in."""
    return Path(tempfile.mkdtemp(prefix=_prefix(target.name), suffix=TMP_SUFFIX, dir=target.parent))


def leftovers(folder: Path, of: str | None = None) -> list[Path]:
    """Temporary files and folders of ours in folder (only those made for the name `of`, if given)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        match = _TEMP.fullmatch(name)
        if match and (of is None or f".{match['of']}." == _prefix(of)):
            out.append(folder / name)
    return sorted(out)


def remove_leftover_files(folder: Path, of: str | None = None) -> None:
    """Remove the temporary files (not folders, not links) a killed run left in folder."""
    for path in leftovers(folder, of):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def taken(folder: Path, names) -> str | None:
    """Why output cannot go into folder (it is no folder, or already holds one of names), or None:
    a run never replaces a file."""
    if os.path.lexists(folder) and not folder.is_dir():
        return f"{folder} exists and is not a folder: choose a new folder for --out"
    for name in names:
        if os.path.lexists(folder / name):
            return f"{folder / name} already exists: choose a new folder for --out"
    return None


def walk(folder: Path, leave_out: Path | None = None) -> list[Path]:
    """Every file under folder, recursively, in a stable (sorted) order: the one walk every command
    makes. Left out: sort's state folders (STATE_DIR), our temporary files, and the folder leave_out
    (sort's destination, when it lies inside). Links to folders are not followed."""
    skip = leave_out.resolve() if leave_out is not None else None
    found = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if d != STATE_DIR and (skip is None or (here / d).resolve() != skip))
        found += [here / n for n in sorted(names) if not n.endswith(TMP_SUFFIX)]
    return found


def inside(root: Path, path: Path) -> bool:
    """Whether path, with every link followed, lies inside root."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


@contextmanager
def parsing(path: Path, error: type[Exception], what: str):
    """Any failure to read or parse one file from elsewhere, as one `error` naming it: parsers of
    hostile bytes raise many types (BadZipFile, RecursionError, MemoryError, ...)."""
    try:
        yield
    except error:
        raise
    except Exception as exc:
        raise error(f"{path}: {what} ({type(exc).__name__}: {exc})") from exc


class FolderLock:
    """A lock on a folder (the folder itself, so nothing is added to it), held from creation to the
    end of the with block. wait=False: a folder another process holds raises BlockingIOError at
    once; wait=True: wait until it is free. The lock is the kernel's (flock), so a killed run
    never leaves it held."""

    def __init__(self, folder: Path, wait: bool = False):
        self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            os.close(self._fd)
            raise

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)


def read_npy(fh, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """One array from an .npy stream whose header must give this shape (None: a dimension of any
    length) and dtype (a text dtype: at most this long); ValueError otherwise. Nothing is allocated
    before the data has been read, so a header that claims terabytes costs nothing, and the data
    must be exactly as long as the header says. Float arrays must be finite. Nothing is unpickled."""
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"the .npy header has unsupported version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    got_shape, fortran, got_dtype = read_header(fh)
    same_type = got_dtype == dtype or (got_dtype.kind == dtype.kind == "U" and got_dtype.itemsize <= dtype.itemsize)
    same_shape = len(got_shape) == len(shape) and all(want in (None, got) for want, got in zip(shape, got_shape))
    if not same_shape or not same_type:
        raise ValueError(f"the array is {got_dtype} of shape {got_shape}, expected {dtype} of shape {shape}")
    size = math.prod(got_shape) * got_dtype.itemsize
    chunks, left = [], size + 1
    while left > 0 and (chunk := fh.read(min(left, _CHUNK))):  # never more memory than the data read
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) != size:
        raise ValueError(f"the array data is {len(data)} bytes long, its header says {size}")
    array = np.frombuffer(data, got_dtype).reshape(got_shape, order="F" if fortran else "C")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("the array holds NaN or infinite values")
    return array
