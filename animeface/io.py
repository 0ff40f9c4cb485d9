"""Images in: one loader for paths, bytes, numpy arrays and PIL images.

Everything downstream gets an RGB uint8 array of shape (H, W, 3). Files are
decoded by content, never by extension, and only in raster formats Pillow decodes
itself (RASTER_FORMATS: no external program ever runs on input); each failure is an
ImageError that names the input.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image, ImageOps

from .errors import AnimefaceError, ImageError

ImageLike = Union[str, os.PathLike, bytes, bytearray, np.ndarray, Image.Image]

#: Refuse images above this many pixels (decompression-bomb guard); override with
#: the environment variable ANIMEFACE_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 80_000_000

#: Refuse files larger than this many bytes: no picture under the pixel limit needs more.
MAX_FILE_BYTES = 512 << 20

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif")

#: The only formats decoded (Pillow's names): raster formats Pillow decodes itself. Others, PostScript
#: above all (Pillow hands it to Ghostscript, an interpreter), are refused from their header.
RASTER_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def max_pixels() -> int:
    """The pixel limit: ANIMEFACE_MAX_PIXELS, else DEFAULT_MAX_PIXELS; a setting that is not a whole
    number above 0 is an AnimefaceError naming it."""
    text = os.environ.get("ANIMEFACE_MAX_PIXELS", "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise AnimefaceError(f"ANIMEFACE_MAX_PIXELS={text!r}: not a whole number of pixels above 0 (such as "
                             f"{DEFAULT_MAX_PIXELS}, the default); set it to one, or unset it")
    return value


def _over_limit(name: str, pixels: str, limit: int) -> ImageError:
    """The one message for a picture over the pixel limit, whichever check found it."""
    return ImageError(f"{name}: {pixels} is over the limit of {limit} pixels; set ANIMEFACE_MAX_PIXELS to allow "
                      "larger images")


def describe(src: ImageLike) -> str:
    """A short name for an input, for error messages and reports."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    if isinstance(src, np.ndarray):
        return f"<array {src.shape} {src.dtype}>"
    if isinstance(src, Image.Image):
        return getattr(src, "filename", "") or f"<PIL image {src.mode} {src.size}>"
    return f"<{type(src).__name__}>"


def load_image(src: ImageLike, name: str | None = None) -> np.ndarray:
    """Decode any image-like input into an RGB uint8 array.

    Handles EXIF rotation, grayscale, alpha (composited on white), palette, CMYK,
    16-bit and float data, and animated files (first frame). Raises ImageError
    naming the input (or `name`, for bytes read from a known file) when it is
    empty, truncated, not an image or too large.
    """
    name = name or describe(src)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, name)
    if isinstance(src, Image.Image):
        return _pil_to_rgb(src, name)
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise ImageError(f"{name}: empty input, no image data")
        return _decode(io.BytesIO(bytes(src)), name)
    if isinstance(src, (str, os.PathLike)):
        with open_file(src, name) as fh:
            return _decode(fh, name)
    raise ImageError(f"{name}: not an image input; pass a path, bytes, a numpy array or a PIL image")


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link"}


def open_file(path: os.PathLike, name: str | None = None, follow_links: bool = True, limit: int = MAX_FILE_BYTES):
    """Open a regular file for reading in binary, never blocking: a FIFO, a device, a folder (or, with
    follow_links=False, a symbolic link) is an ImageError saying what it is, as is an empty file, one
    over limit bytes or one that cannot be opened (naming the reason, e.g. permission denied)."""
    name = name or str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise ImageError(f"{name}: not a regular file but {_KINDS[stat.S_IFLNK]}") from None
        if exc.errno == errno.ENOENT:
            raise ImageError(f"{name}: no such file or folder") from None
        raise ImageError(f"{name}: cannot read the file ({exc.strerror})") from None
    except ValueError:  # a NUL or a lone surrogate (a name from JSON, say): no file can have that name
        raise ImageError(f"{name!r}: no such file (no file name can hold that)") from None
    fh = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"not a regular file but {_KINDS.get(stat.S_IFMT(info.st_mode), 'a special file')}"
    elif info.st_size == 0:
        problem = "empty file (0 bytes)"
    elif info.st_size > limit:
        problem = f"{info.st_size / 2**20:.0f} MiB is over the file size limit of {limit / 2**20:g} MiB"
    if problem:
        fh.close()
        raise ImageError(f"{name}: {problem}")
    return fh


def read_file(path: os.PathLike, name: str | None = None, follow_links: bool = True,
              limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, with open_file's checks; a file that grows past limit
    while being read is refused too."""
    name = name or str(path)
    with open_file(path, name, follow_links, limit) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise ImageError(f"{name}: cannot read the file ({exc.strerror})") from None
    if len(data) > limit:
        raise ImageError(f"{name}: over the file size limit of {limit / 2**20:g} MiB")
    return data


def image_pixels(data: bytes, name: str) -> int:
    """Width x height from the image header alone (nothing decoded); ImageError if unreadable or over the limit."""
    img = _open(io.BytesIO(data), name)
    return img.width * img.height


def available_cores() -> int:
    """The CPU cores this process may run on (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pipelined(work: Callable, items, jobs: int, window: int):
    """work(item) for each item, yielded in order, computed up to `window` items ahead by `jobs` threads."""
    pool = ThreadPoolExecutor(jobs, thread_name_prefix="animeface-read")
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class PixelBudget:
    """Pixels that threads decoding pictures may hold at once, shared between them.

    Decoding costs memory by pixels, not by file size: a 10 KB PNG can decode to
    80 million pixels, about 1 GB on the way to an RGB array. Each thread holds
    its picture's pixels (read from the header) while it decodes and works on the
    picture, and waits while others hold too many; a picture larger than the whole
    budget goes ahead alone.
    """

    def __init__(self, pixels: int):
        self.pixels = pixels
        self._used = 0
        self._free = threading.Condition()

    @contextmanager
    def decoded(self, data: bytes, name: str):
        """The picture in data, decoded (load_image) while its pixels, read from its header, are held."""
        with self.hold(image_pixels(data, name)):
            yield load_image(data, name=name)

    @contextmanager
    def hold(self, pixels: int):
        with self._free:
            self._free.wait_for(lambda: self._used == 0 or self._used + pixels <= self.pixels)
            self._used += pixels
        try:
            yield
        finally:
            with self._free:
                self._used -= pixels
                self._free.notify_all()


def _decode(fh, name: str) -> np.ndarray:
    img = _open(fh, name)
    with _pil_errors(name):
        img.seek(0)  # animated GIF/WebP/APNG: the first frame
        img.load()
    return _pil_to_rgb(img, name)


def _open(fh, name: str) -> Image.Image:
    """The image with only its header read, refused when it is not in RASTER_FORMATS or its pixels are
    over the limit."""
    limit = max_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check, at twice this, must not refuse first
    try:
        with _pil_errors(name):
            img = Image.open(fh, formats=RASTER_FORMATS)
    except ImageError:
        other = _other_format(fh)
        if other:
            raise ImageError(f"{name}: {other} content, not a picture format read here "
                             f"({', '.join(RASTER_FORMATS)})") from None
        raise
    if img.width * img.height > limit:
        raise _over_limit(name, f"{img.width}x{img.height} pixels", limit)
    return img


def _other_format(fh) -> str | None:
    """The name of the format Pillow would take the file's header for, outside RASTER_FORMATS; found with
    each format's header test alone, so that no decoder (and no interpreter) is started."""
    fh.seek(0)
    prefix = fh.read(16)
    Image.init()
    return next((f for f in Image.ID if f not in RASTER_FORMATS and _accepts(Image.OPEN[f][1], prefix)), None)


@contextmanager
def _pil_errors(name: str):
    """PIL's many exception types for bad data, as one ImageError naming the input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable image (unknown or damaged format)") from exc
    except Image.DecompressionBombError as exc:  # Pillow refuses past twice its own limit, before we see the size
        raise _over_limit(name, f"more than {2 * Image.MAX_IMAGE_PIXELS} pixels", max_pixels()) from exc
    except Exception as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from exc


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not lose the picture
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_rgb(np.asarray(img), name)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: the array has no pixels")
    if arr.shape[0] * arr.shape[1] > max_pixels():
        raise _over_limit(name, f"{arr.shape[1]}x{arr.shape[0]} pixels", max_pixels())
    arr = _to_uint8(arr, name)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: the array holds NaN or infinite values")
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        top = 65535 if arr.max() > 255 else 255
        return np.clip(arr.astype(np.float64) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    raise ImageError(f"{name}: unsupported array type {arr.dtype}")


def is_picture(path: Path) -> bool:
    """The one rule, for every command, for which files found in a folder are pictures: content decides,
    whatever the name. A file with a picture's suffix, or whose header is of a format read
    (RASTER_FORMATS: a JPEG named x.download or with no suffix at all), is one; so is a file that is not
    a regular one (a FIFO, a device), so that reading it names the problem. An empty file or another
    kind of file (notes, videos) is not. Only the first bytes are read."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        info = os.stat(path)
    except OSError:  # a dangling link: reading it says so
        return True
    if not stat.S_ISREG(info.st_mode):
        return True
    try:
        with open_file(path) as fh:
            prefix = fh.read(16)
    except (ImageError, OSError):
        return info.st_size > 0
    Image.init()
    return any(_accepts(Image.OPEN[f][1], prefix) for f in RASTER_FORMATS if f in Image.OPEN)


def _accepts(accept, prefix: bytes) -> bool:
    """Whether a format's header test takes these first bytes."""
    try:
        return accept is not None and bool(accept(prefix))
    except Exception:  # noqa: BLE001 - a header test given too short a prefix, as Pillow allows
        return False


def iter_image_files(paths, keep=None) -> list[Path]:
    """Expand files and folders into a list of files: each folder walked (files.walk), keeping the
    files `keep` accepts (default: is_picture, as every picture command does; video passes its
    own); files named explicitly are kept whatever they hold, for reading to judge."""
    from . import files

    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(f for f in files.walk(p) if (keep or is_picture)(f))
        else:
            out.append(p)
    return out
