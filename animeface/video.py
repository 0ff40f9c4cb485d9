"""Who appears when in a video: sample frames, follow each face as a track, name each track once.

Stages: OpenCV's reader demuxes and decodes the clip, and only the sampled frames
(every `every` seconds) are converted to pictures -> the Recognizer's own stages
detect, crop and embed their faces (embedded a few frames at a time, in one batch)
-> each face joins the open track it overlaps and looks like, or starts a new one;
a scene cut (the frame's colours change at once) ends every open track -> a track
that has lost its face ends, and is named once, from the mean of its vectors, by the
same rule as a picture's face: the mean of a dozen views of a face is surer than any one.

Tracks are yielded as they end, and nothing of a frame is kept once its faces are
embedded, so memory stays flat however long the clip is. annotate() writes a clip again
with its tracks drawn; group_unknown() groups unknown tracks as `cluster` groups faces.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .boxes import Box
from . import files
from .crop import thumbnail_jpeg
from .errors import ImageError
from .io import max_pixels, open_file

#: Seconds between sampled frames by default: 4 frames a second.
DEFAULT_EVERY = 0.25
#: Suffixes taken for videos when a folder is walked (a file named on the command line is tried whatever its name).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".gif")


def is_video(path: Path) -> bool:
    """Which files found in a folder are clips: by suffix (a file named explicitly is read whatever its name)."""
    return path.suffix.lower() in VIDEO_SUFFIXES
#: A face joins a track only when its vector is at least this similar (cosine) to the track's mean:
#: on the real weights, in clips like tests/test_video.py's, views of one face half a second apart
#: scored 0.85-1.0, faces of different characters 0.05-0.27.
SAME_FACE = 0.6
#: ... and when its box overlaps the track's last box by this IoU, or its centre lies within
#: REACH box sides of it (a pan or a zoom between two samples).
MIN_IOU = 0.2
REACH = 2.0
#: A track survives this many samples without its face (a detection missed) before it ends.
MAX_MISSED = 1
#: Bhattacharyya distance between the colour histograms of two samples that makes a scene cut.
CUT_DISTANCE = 0.5
#: Frames whose faces are embedded in one batch.
FRAMES_PER_BATCH = 8


@dataclass
class Track:
    """One face followed through a clip: from `start` to `end` seconds (the end is the first sample
    it was no longer seen in), over `frames` sampled frames, named once as `face`, whose box is
    where it was at `at` seconds (its best-detected frame)."""

    number: int
    start: float
    end: float
    frames: int
    face: object  # recognizer.Face
    at: float
    thumbnail: bytes | None = field(default=None, repr=False)
    #: The unit mean of its vectors, which named it (and groups it with --group-unknown).
    vector: np.ndarray | None = field(default=None, repr=False)
    #: (seconds, box) at each sample it was seen in.
    sightings: list = field(default_factory=list, repr=False)

    @property
    def label(self) -> str | None:
        return self.face.label

    def to_dict(self) -> dict:
        return {"track": self.number, "start": round(self.start, 3), "end": round(self.end, 3),
                "frames": self.frames, "at": round(self.at, 3), **self.face.to_dict()}


class Clip:
    """A video opened by OpenCV: its frame rate and size, and its sampled frames.

    Any problem is an ImageError naming the file: not a regular file, empty, not a video
    OpenCV reads (unknown format or codec, or damaged), too many pixels a frame, or a
    clip that stops before the end its header gives (truncated).
    """

    def __init__(self, path: os.PathLike):
        import cv2

        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own lines say nothing a user can act on
        self.path = Path(path)
        name = str(path)
        with open_file(self.path, name, limit=math.inf):
            pass  # a FIFO, a device, a folder or an empty file is refused before FFmpeg blocks on it
        log = cv2.utils.logging
        level = log.getLogLevel()
        log.setLogLevel(log.LOG_LEVEL_SILENT)  # its lines on a file it cannot read say less than the ImageError
        try:
            self._capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG)
        finally:
            log.setLogLevel(level)
        if not self._capture.isOpened():
            raise ImageError(f"{name}: not a video OpenCV can read (an unknown format or codec, or a damaged "
                             "or truncated file)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else 0.0  # 0: unknown, times come from the frames
        self.frame_count = int(max(self._capture.get(cv2.CAP_PROP_FRAME_COUNT), 0))
        width, height = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > max_pixels():
            raise ImageError(f"{name}: {width}x{height} pixels a frame is over the limit of {max_pixels()}; "
                             "set ANIMEFACE_MAX_PIXELS to allow it")
        #: Seconds read so far; the clip's length once samples() is done.
        self.seconds = 0.0
        #: Frames sampled so far.
        self.sampled = 0

    def samples(self, every: float | None = DEFAULT_EVERY) -> Iterator[tuple[float, np.ndarray]]:
        """(seconds, RGB frame) every `every` seconds (None: every frame). Every frame is decoded (a
        frame of most codecs needs the ones before it) but only the sampled ones are converted into pictures."""
        import cv2

        capture, name = self._capture, str(self.path)
        every = 0.0 if every is None else check_every(every)
        index, due = 0, 0.0
        try:
            while capture.grab():
                position = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                t = position if position > 0 or index == 0 or not self.fps else index / self.fps
                index += 1
                self.seconds = max(self.seconds, t + (1.0 / self.fps if self.fps else 0.0))
                if t + 1e-6 < due:
                    continue
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    break
                while every and due <= t + 1e-6:
                    due += every
                self.sampled += 1
                yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
        if index == 0:
            raise ImageError(f"{name}: no frame could be decoded (a codec OpenCV cannot read, or a damaged file)")
        if self.frame_count and index + max(self.fps, 0.02 * self.frame_count) < self.frame_count:
            raise ImageError(f"{name}: the video stops at frame {index} of the {self.frame_count} its header "
                             f"gives ({self.seconds:.1f} s read): truncated or damaged; what was read is reported")


def check_every(every: float) -> float:
    """`every` if it is a usable number of seconds between samples; ValueError naming it otherwise."""
    if not isinstance(every, (int, float)) or not math.isfinite(every) or every <= 0:
        raise ValueError(f"every must be a number of seconds above 0 (such as 0.25), got {every!r}")
    return float(every)


@dataclass
class _Open:
    """A track still open: the sum of its vectors, where its face was last, its best view."""

    number: int
    start: float
    last: float
    box: Box
    total: np.ndarray
    frames: int = 0
    missed: int = 0
    best: Box | None = None
    at: float = 0.0
    thumbnail: bytes | None = None
    sightings: list = field(default_factory=list)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(float(np.linalg.norm(self.total)), 1e-12)

    def see(self, t: float, box: Box, vector: np.ndarray, crop: np.ndarray | None, thumbnails: bool) -> None:
        self.last, self.box, self.missed = t, box, 0
        self.sightings.append((t, box))
        self.total = self.total + vector
        self.frames += 1
        if self.best is None or box.score > self.best.score:
            self.best, self.at = box, t
            self.thumbnail = thumbnail_jpeg(crop) if thumbnails and crop is not None else None


def follow(recognizer, clip: Clip, every: float = DEFAULT_EVERY, thumbnails: bool = False) -> Iterator[Track]:
    """The tracks of a clip, each yielded as it ends, named by the recognizer; with thumbnails,
    each carries a small JPEG of its face. A clip that stops early (truncated) yields the tracks
    of what was read, then raises its ImageError."""
    every = check_every(every)
    tracks: list[_Open] = []
    numbers = itertools.count(1)
    previous = None

    def ended(track: _Open) -> Track:
        face = recognizer.name_faces(track.mean[None], [track.best])[0]
        end = min(track.last + every, clip.seconds)
        return Track(track.number, track.start, end, track.frames, face, track.at, track.thumbnail, track.mean,
                     track.sightings)

    try:
        for t, boxes, vectors, crops, colours in _embedded(recognizer, clip.samples(every)):
            if previous is not None and _cut(previous, colours):
                yield from map(ended, tracks)
                tracks = []
            previous = colours
            matched = _match(tracks, boxes, vectors)
            for j, (box, vector, crop) in enumerate(zip(boxes, vectors, crops)):
                if j not in matched:
                    matched[j] = _Open(next(numbers), t, t, box, np.zeros_like(vector))
                    tracks.append(matched[j])
                matched[j].see(t, box, vector, crop, thumbnails)
            still = []
            for track in tracks:
                if track.last != t:
                    track.missed += 1
                    if track.missed > MAX_MISSED:
                        yield ended(track)
                        continue
                still.append(track)
            tracks = still
    except ImageError:
        yield from map(ended, tracks)
        raise
    yield from map(ended, tracks)


def _embedded(recognizer, samples):
    """(seconds, boxes, vectors, crops, colour histogram) per sample: faces detected and cropped
    frame by frame, embedded FRAMES_PER_BATCH frames at a time."""
    waiting = []

    def flush():
        crops = [c for _, _, cs, _ in waiting for c in cs]
        vectors = recognizer.vectors_for(crops, keep=True) if crops else None
        row = 0
        for t, boxes, cs, colours in waiting:
            yield t, boxes, (vectors[row:row + len(cs)] if cs else []), cs, colours
            row += len(cs)
        waiting.clear()

    for t, rgb in samples:
        boxes, crops = recognizer.face_crops(rgb, "detect")
        waiting.append((t, boxes, crops, _colours(rgb)))
        if len(waiting) == FRAMES_PER_BATCH:
            yield from flush()
    yield from flush()


def _colours(rgb: np.ndarray) -> np.ndarray:
    """The frame's hue-saturation histogram, from a small copy: what a scene cut changes at once."""
    import cv2

    small = cv2.resize(rgb, (64, 36), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    histogram = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(histogram, None, 1.0, 0.0, cv2.NORM_L1)


def _cut(before: np.ndarray, after: np.ndarray) -> bool:
    import cv2

    return cv2.compareHist(before, after, cv2.HISTCMP_BHATTACHARYYA) > CUT_DISTANCE


def _match(tracks: list[_Open], boxes: list[Box], vectors) -> dict[int, _Open]:
    """Face index -> the open track it continues: pairs that overlap (or lie within reach) and look
    alike, taken greedily, best (overlap + similarity) first, each track and face at most once."""
    pairs = []
    for track in tracks:
        mean = track.mean
        for j, (box, vector) in enumerate(zip(boxes, vectors)):
            similarity = float(mean @ vector)
            overlap = iou(track.box, box)
            if similarity >= SAME_FACE and (overlap >= MIN_IOU or _within_reach(track.box, box)):
                pairs.append((overlap + similarity, j, track))
    matched, taken = {}, set()
    for _, j, track in sorted(pairs, key=lambda p: -p[0]):
        if j not in matched and id(track) not in taken:
            matched[j] = track
            taken.add(id(track))
    return matched


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _within_reach(a, b) -> bool:
    side = max(a[2], a[3], b[2], b[3])
    return math.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2) <= REACH * side


def on_screen(tracks) -> dict[str | None, float]:
    """Seconds each character (None: unknown faces) is on screen: the union of its tracks' spans,
    so two tracks of one character at once count once. Most seen first."""
    spans: dict[str | None, list[tuple[float, float]]] = {}
    for track in tracks:
        spans.setdefault(track.label, []).append((track.start, track.end))
    seconds = {}
    for label, intervals in spans.items():
        total, reached = 0.0, -math.inf
        for start, end in sorted(intervals):
            if end > reached:
                total += end - max(start, reached)
                reached = end
        seconds[label] = total
    return dict(sorted(seconds.items(), key=lambda item: -item[1]))


def group_unknown(recognizer, runs, threshold: float | None = None):
    """The unknown tracks of clips, [(clip, tracks), ...], grouped by character as `cluster` groups
    faces (cluster.Clusters; tracks the gallery named are set aside), so that a person can enroll
    a character straight from a video: save it, then `enroll NAME --cluster ID --from DIR`. A
    track's id in place of a picture's sha256 is the hash of its clip, span and box."""
    import hashlib

    from .cluster import ClusterFace, Clusters, checked, group, threshold_from

    threshold = threshold_from(recognizer.embedder.pair_similarity) if threshold is None else checked(threshold)
    faces, vectors, thumbnails, named = [], [], [], []
    for clip, tracks in runs:
        for t in tracks:
            source = f"{clip} {t.start:.2f}-{t.end:.2f} s"
            box = [int(v) for v in t.face.box]
            face = ClusterFace(source, box, hashlib.sha256(f"{os.path.abspath(clip)}\0{source}\0{box}".encode(
                "utf-8", "backslashreplace")).hexdigest())
            if t.label is not None:
                named.append((face, t.label))
                continue
            faces.append(face)
            vectors.append(t.vector)
            thumbnails.append(t.thumbnail or b"")
    vectors = np.stack(vectors) if vectors else np.zeros((0, recognizer.embedder.dim), np.float32)
    return Clusters(faces, vectors, group(vectors, threshold), threshold, named, [], thumbnails)


def annotate(clip: Clip, tracks, target: Path) -> None:
    """Write the clip again to target (mp4 or avi, as OpenCV's writer makes them) with each track's
    box and name drawn on every frame of its span, the box where it was last seen; atomically, and
    never over a file (FileExistsError)."""
    import bisect

    import cv2

    from .detect import draw_boxes

    seen = [(t, [s for s, _ in t.sightings]) for t in tracks if t.sightings]

    def fill(path: Path) -> None:
        writer = None
        try:
            for t, rgb in clip.samples(None):
                if writer is None:
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps or 25.0,
                                             (rgb.shape[1], rgb.shape[0]))
                    if not writer.isOpened():
                        raise ImageError(f"{target}: OpenCV cannot write a video of this kind; name it .mp4 or .avi")
                shown = [(track.sightings[bisect.bisect_right(times, t + 1e-6) - 1][1], _caption(track))
                         for track, times in seen if track.start <= t + 1e-6 < track.end]
                drawn = draw_boxes(rgb, [box for box, _ in shown], [caption for _, caption in shown])
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        finally:
            if writer is not None:
                writer.release()

    files.write_named(Path(target), fill)


def _caption(track) -> str:
    return f"{track.label} {track.face.score:.2f}" if track.label else "unknown"
