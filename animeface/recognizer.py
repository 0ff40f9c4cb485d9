"""Name faces: detect -> crop -> embed -> gallery + softmax head -> a name, or unknown.

The rule: a face gets its most probable name only when that name's probability of
being right clears the threshold that refuses the chosen share of strangers
(stranger_refusal); thresholds.py says how the probabilities are calibrated.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import threading
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .crop import DEFAULT_MARGIN, crop_face, thumbnail_jpeg, whole_image
from .detect import DEFAULT_DETECTOR, DETECTORS, Box, Detector
from .embed import Embedder
from .errors import BackboneMismatchError, GalleryError, ImageError
from .gallery import Gallery, box_problem, locked, validate_name
from .head import SoftmaxHead
from .io import ImageLike, available_cores, describe, iter_image_files, load_image, pipelined, read_file
from .thresholds import RULE, STRANGER_REFUSAL, Calibration, Normaliser, calibrate, check_refusal, gallery_bank
from .video import DEFAULT_EVERY, Clip, check_every, follow

if TYPE_CHECKING:
    from .cluster import Clusters
    from .explain import Explanation

FACE_MODES = ("detect", "whole", "auto")
NEIGHBOURS = 100
TOP_CANDIDATES = 5
#: In faces="auto", a picture at most this many pixels a side and this close to square looks like a face crop.
CROP_MAX_SIDE = 512
CROP_MAX_ASPECT = 1.25


class WholePicture(Box):
    """The box of a picture taken whole as one face (faces="whole", or "auto" when it is a face crop)."""


def placed(box: Box) -> dict:
    """Where a gallery entry's face is: its box, and the turn that set it upright when it has one."""
    return {"box": list(box), **({"angle": box.angle} if box.angle else {})}


@dataclass
class Face:
    """One face: where it is, who it is (None when unknown), how sure, and the best guesses."""

    box: Box
    label: str | None
    score: float
    candidates: list[tuple[str, float]] = field(default_factory=list)
    #: For an unknown face, why its best guess was refused (which threshold it fell below).
    reason: str | None = None

    @property
    def whole_picture(self) -> bool:
        """True when the whole picture was taken as the face (a face crop), not a detected box."""
        return isinstance(self.box, WholePicture)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "box_score": self.box.score, "box_angle": self.box.angle,
                "whole_picture": self.whole_picture,
                "label": self.label, "score": self.score, "reason": self.reason,
                "candidates": [[n, s] for n, s in self.candidates]}


@dataclass
class EnrollReport:
    """What enroll used, what it skipped (read, but not used) and what it could not read, with reasons."""

    name: str
    used: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        """One line: the counts, skipped pictures summarised by reason (details() lists them)."""
        line = f"{self.name}: {len(self.used)} face(s) enrolled"
        reasons = Counter(why for _, why in self.skipped)
        if reasons:
            line += "; skipped " + ", ".join(f"{n} ({why})" for why, n in reasons.items())
        if self.failed:
            line += f"; {len(self.failed)} unreadable"
        return line

    def to_dict(self) -> dict:
        return {"name": self.name, "used": self.used,
                "skipped": [{"source": src, "reason": why} for src, why in self.skipped],
                "failed": [{"source": src, "reason": why} for src, why in self.failed]}

    def details(self) -> list[str]:
        """One line per picture skipped or unreadable, with its reason."""
        return [f"  skipped {src}: {why}" for src, why in self.skipped] + [f"  unreadable: {why}" for _, why in self.failed]


def default_gallery_path() -> Path:
    """ANIMEFACE_HOME, else $XDG_DATA_HOME/animeface/gallery, else ~/.local/share/animeface/gallery."""
    if os.environ.get("ANIMEFACE_HOME"):
        return Path(os.environ["ANIMEFACE_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "animeface" / "gallery"


class Recognizer:
    """A gallery of enrolled characters, and the pipeline that names faces against it.

    detector: a Detector, or its kind ("faceboxes", the default, or "cascade"); the
    cascade file comes from cascade= (else ANIMEFACE_CASCADE), the FaceBoxes weights from
    ANIMEFACE_DETECTOR, else their downloads.
    check_backbone=False opens a gallery whatever backbone made it, for reading and
    changing its list of characters (list, forget) without comparing any vectors.
    """

    def __init__(self, path: os.PathLike | None = None, *, backbone=None, cascade=None,
                 projection="default", stranger_refusal: float = STRANGER_REFUSAL, margin: float = DEFAULT_MARGIN,
                 detector: str | Detector = DEFAULT_DETECTOR, progress: bool | None = None,
                 check_backbone: bool = True):
        self.path = Path(path) if path is not None else default_gallery_path()
        self.margin = margin
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._cascade = cascade
        if isinstance(detector, str) and detector not in DETECTORS:
            raise ValueError(f"detector must be a Detector or one of {', '.join(DETECTORS)}, got {detector!r}")
        self._detector = detector
        self._local = threading.local()
        self.stranger_refusal = check_refusal(stranger_refusal)
        self.head: SoftmaxHead | None = None
        self.embedder = Embedder(backbone, projection=projection)
        self._check_backbone = check_backbone
        self.gallery = Gallery(self.embedder.backbone_id, self.embedder.dim, self.embedder.description)
        self._calibration: Calibration | None = None
        self._normaliser: Normaliser | None = None
        if Gallery.exists(self.path):
            with locked(self.path):  # never read half of a save in progress
                loaded = Gallery.load(self.path)
            self._take(*loaded)
        else:
            self._refit()

    @classmethod
    def open(cls, path: os.PathLike, **kwargs) -> "Recognizer":
        """Open an existing gallery folder; a missing one is an error (use Recognizer(path) to create)."""
        if not Gallery.exists(path):
            raise GalleryError(f"{path}: no gallery here (no gallery.json); Recognizer(path) creates a new one")
        return cls(path, **kwargs)

    # -- the public verbs --------------------------------------------------------

    @property
    def characters(self) -> dict[str, int]:
        """Enrolled names with their sample counts."""
        return self.gallery.characters

    @property
    def calibration(self) -> Calibration:
        """The gallery's decision rule, fitted on its own faces and the embedder's stranger bank."""
        return self._calibration

    @property
    def threshold(self) -> float:
        """The probability a name must reach to be given: refuses `stranger_refusal` of strangers."""
        if self._calibration is None:
            raise BackboneMismatchError(f"{self.path}: opened with check_backbone=False, to list and forget "
                                        "characters only: its faces cannot be named with another embedder")
        return self._calibration.threshold(self.stranger_refusal)

    @property
    def detector(self) -> Detector:
        """The detector given, else one of the kind given per thread: an OpenCV cascade must not be
        shared between threads."""
        if not isinstance(self._detector, str):
            return self._detector
        if not hasattr(self._local, "detector"):
            self._local.detector = Detector(self._detector, cascade=self._cascade)
        return self._local.detector

    def enroll(self, name: str, images, faces: str = "auto") -> EnrollReport:
        """Add a character from pictures (paths, folders, bytes, arrays or PIL images).

        Each picture gives one face: with several detected, the largest. Pictures
        already enrolled for this name, faces enrolled under another name (one face is
        one character), unreadable pictures and faceless ones are skipped and listed in the report.
        """
        name = validate_name(name)
        _check_faces(faces)
        images = _as_list(images)
        report = EnrollReport(name)
        crops, vectors, entries, seen = [], [], [], set()
        for src in self._progress(_expand(images), "enroll " + name):
            label = describe(src)
            try:
                data = _read(src, label)
            except ImageError as exc:
                report.failed.append((label, str(exc)))
                continue
            digest = _sha256(data)
            if digest in seen or self.gallery.has(name, digest):
                report.skipped.append((label, f"already enrolled as {name}"))
                continue
            try:
                boxes, face_crops = self.face_crops(load_image(data, name=label), faces)
            except ImageError as exc:
                report.failed.append((label, str(exc)))
                continue
            if not boxes:
                report.skipped.append((label, "no face found (pass faces='whole' if it is already a face crop)"))
                continue
            largest = max(range(len(boxes)), key=lambda i: boxes[i].w * boxes[i].h)
            other = self.gallery.enrolled_as(digest, boxes[largest])
            if other is not None:
                report.skipped.append((label, f"its face is enrolled as {other}"))
                continue
            seen.add(digest)
            crops.append(face_crops[largest])
            entry = {"label": name, "source": label, "sha256": digest, **placed(boxes[largest])}
            entries.append(entry)
            report.used.append({"source": label, "box": list(boxes[largest]), "faces_found": len(boxes)})
            if len(crops) == self.embedder.batch_size:  # embed as we go, so the progress bar tracks the slow part
                vectors.append(self.embedder.embed(np.stack(crops)))
                crops = []
        if crops:
            vectors.append(self.embedder.embed(np.stack(crops)))
        if vectors:
            self.gallery.add(np.concatenate(vectors), entries)
            self._refit()
        return report

    def enroll_face(self, name: str, image: ImageLike, box=None, source: str | None = None,
                    angle: float = 0.0) -> dict:
        """Add one face chosen by a person: the box (x, y, w, h) of the picture, turned upright by
        `angle` (a detected box's `angle`), or the whole picture as a face crop when box is None.
        Returns the gallery entry added, which forget_face takes to undo it. The same face of the
        same picture enrolled already (under any name: one face is one character) is a ValueError."""
        name = validate_name(name)
        label = source or describe(image)
        data = _read(image, label)
        rgb = load_image(data, name=label)
        h, w = rgb.shape[:2]
        if not -180 <= angle <= 180:  # NaN too
            raise ValueError(f"angle must be degrees from -180 to 180, got {angle}")
        if box is None:
            if angle:
                raise ValueError("an angle turns a box: give the face's box with it")
            box, crop = Box(0, 0, w, h), whole_image(rgb, self.embedder.input_size)
        else:
            box = [int(v) for v in box]
            problem = box_problem(box, w, h)
            if problem:
                raise ValueError(f"box {problem}")
            box = Box(*box, angle=float(angle))
            crop = crop_face(rgb, box, self.embedder.input_size, self.margin)
        entry = {"label": name, "source": label, "sha256": _sha256(data), **placed(box)}
        enrolled_as = self.gallery.enrolled_as(entry["sha256"], box)
        if enrolled_as is not None:
            hint = "" if enrolled_as == name else "; forget it there first to name it again"
            raise ValueError(f"this face of {label} is already enrolled as {enrolled_as}{hint}")
        self.gallery.add(self.embedder.embed(crop[None]), [entry])
        self._refit()
        return entry

    def identify(self, image: ImageLike, faces: str = "auto") -> list[Face]:
        """The faces in one picture, each named or unknown (label None)."""
        _check_faces(faces)
        boxes, crops = self.face_crops(load_image(image), faces)
        return self.name_faces(self.vectors_for(crops), boxes)

    def identify_batch(self, images, faces: str = "auto") -> list[list[Face]]:
        """identify() for many pictures, embedded in batches. An unreadable picture gives
        a warning naming it and an empty list, and the batch carries on."""
        images = list(images)
        results: list[list[Face]] = []
        with self._progress(None, "identify", total=len(images)) as bar:
            for _, found in self.identify_iter(images, faces, chunk=self.embedder.batch_size):
                if isinstance(found, ImageError):
                    warnings.warn(str(found), stacklevel=2)
                    found = []
                results.append(found)
                bar.update()
        return results

    def identify_iter(self, images, faces: str = "auto", chunk: int = 1, jobs: int | None = None):
        """Yield (image, faces) for each picture as soon as it is named, `chunk` pictures per
        embedding call. Decoding and detection run ahead in `jobs` threads (default: the
        cores) while the network embeds; an unreadable picture yields its ImageError in
        place of the faces, and the rest carry on."""
        _check_faces(faces)
        jobs = jobs or available_cores()

        def prepare(src):
            try:
                return src, self.face_crops(load_image(src), faces)
            except ImageError as exc:
                return src, exc

        ready = pipelined(prepare, images, jobs, window=chunk + 2 * jobs)
        while batch := [item for _, item in zip(range(chunk), ready)]:
            found = [f for _, f in batch]
            vectors = self.vectors_for([c for f in found if not isinstance(f, ImageError) for c in f[1]])
            offset = 0
            for src, f in batch:
                if isinstance(f, ImageError):
                    yield src, f
                    continue
                boxes = f[0]
                yield src, self.name_faces(None if vectors is None else vectors[offset:offset + len(boxes)], boxes)
                offset += len(boxes)

    def explain(self, image: ImageLike, faces: str = "auto", top: int = 3) -> list["Explanation"]:
        """Why each face of a picture was named as it was: for the face's `top` best candidates (1 to
        3), a map of how much each part of the face added to its similarity with that character's
        enrolled faces, and the colour histogram's share (explain.py). One item per face and
        candidate, faces in order, each face's best candidate first."""
        _check_faces(faces)
        self.check_explainable(top)
        boxes, crops = self.face_crops(load_image(image), faces)
        return self.explain_crops(boxes, crops, top)

    def explain_crops(self, boxes: list, crops: list[np.ndarray], top: int = 3) -> list["Explanation"]:
        """explain() for faces already found: their boxes and crops, as face_crops gives them."""
        from .explain import Explanation, attribute, vectors_and_maps

        self.check_explainable(top)
        if not boxes:
            return []
        vectors, maps = vectors_and_maps(self.embedder, np.stack(crops))
        centroids, row = self.gallery.centroids(), {name: i for i, name in enumerate(self.characters)}
        out = []
        for i, face in enumerate(self.name_faces(vectors, boxes)):
            candidates = face.candidates[:top]
            targets = centroids[[row[name] for name, _ in candidates]]
            heats, similarities, colours, offsets = attribute([m[i] for m in maps], crops[i], self.embedder, targets)
            out += [Explanation(i, face.box, face.label, name, probability, float(similarities[k]), heats[k],
                                float(colours[k]), float(offsets[k]), crops[i])
                    for k, (name, probability) in enumerate(candidates)]
        return out

    def check_explainable(self, top: int) -> None:
        """ValueError for a `top` out of 1-3, GalleryError for an empty gallery: before any work."""
        if top not in (1, 2, 3):
            raise ValueError(f"top must be 1, 2 or 3, got {top!r}")
        if not len(self.gallery):
            raise GalleryError(f"{self.path}: the gallery is empty; explain compares each face with the "
                               "characters enrolled, so enroll some first")

    def cluster(self, images, faces: str = "auto", threshold: float | None = None, thumbnails: bool = False,
                jobs: int | None = None) -> "Clusters":
        """Group the faces in pictures by character (cluster.py), setting aside those the gallery
        names; faces that fit no group stay ungrouped. `threshold`, the mean similarity two groups
        need to merge, defaults to the one derived from the embedder's calibration. An unreadable
        picture is listed in the result's `failed`, and the rest carry on."""
        from .cluster import ClusterFace, Clusters, checked, group, threshold_from

        _check_faces(faces)
        threshold = threshold_from(self.embedder.pair_similarity) if threshold is None else checked(threshold)
        images = _expand(_as_list(images))
        jobs = jobs or available_cores()
        chunk = self.embedder.batch_size
        found, vectors, thumbs, named, failed, pictures = [], [], [], [], [], []

        def prepare(src):
            label = describe(src)
            try:
                data = _read(src, label)
                boxes, crops = self.face_crops(load_image(data, name=label), faces)
                digest = _sha256(data)
                return [ClusterFace(label, list(box), digest) for box in boxes], crops
            except ImageError as exc:
                return exc, []

        ready = enumerate(pipelined(prepare, images, jobs, window=chunk + 2 * jobs))
        with self._progress(None, "cluster", total=len(images)) as bar:
            while read := [item for _, item in zip(range(chunk), ready)]:
                failed += [str(faces_in) for _, (faces_in, _) in read if isinstance(faces_in, ImageError)]
                batch = [(f, c, picture) for picture, (faces_in, crops) in read if not isinstance(faces_in, ImageError)
                         for f, c in zip(faces_in, crops)]
                if batch:
                    embedded = self.embedder.embed(np.stack([c for _, c, _ in batch]))
                    decided = self.name_faces(embedded if len(self.gallery) else None,
                                              [Box(*f.box) for f, _, _ in batch])
                    for (face, crop, picture), vector, decision in zip(batch, embedded, decided):
                        if decision.label is not None:
                            named.append((face, decision.label))
                            continue
                        found.append(face)
                        vectors.append(vector)
                        pictures.append(picture)
                        if thumbnails:
                            thumbs.append(thumbnail_jpeg(crop))
                bar.update(len(read))
        vectors = np.stack(vectors) if vectors else np.zeros((0, self.embedder.dim), np.float32)
        return Clusters(found, vectors, group(vectors, threshold, pictures=pictures), threshold, named, failed,
                        thumbs if thumbnails else None)

    def identify_video(self, path: os.PathLike, every: float = DEFAULT_EVERY, thumbnails: bool = False):
        """The faces of a video as tracks (video.Track: start and end in seconds, the face named once
        from the mean of its vectors, its box at its best frame), each yielded as it ends. Frames
        are sampled every `every` seconds; memory stays flat however long the clip is. A file that
        is no readable video raises ImageError naming it; a truncated one yields the tracks of what
        was read, then raises it."""
        return follow(self, Clip(path), check_every(every), thumbnails)

    def enroll_group(self, name: str, run: os.PathLike, number: int) -> EnrollReport:
        """Enroll every face of group `number` (1 = the largest) of a run saved by `cluster --out`,
        from its saved vectors: nothing is embedded again. As enroll, one face per picture, and
        pictures already enrolled under this name, or faces under another, are skipped."""
        from .cluster import Clusters

        name = validate_name(name)
        clusters, made_with = Clusters.load(Path(run))
        ours = self.run_description()
        if made_with != ours or clusters.vectors.shape[1] != self.embedder.dim:
            raise BackboneMismatchError(
                f"{run}: this cluster run was made by another embedder (backbone {made_with.get('backbone_id')!r}, "
                f"{_describe(made_with)}) than this gallery's (backbone {ours['backbone_id']!r}, {_describe(ours)}); "
                "run 'animeface cluster' again with this gallery's --backbone and --projection")
        report = EnrollReport(name)
        rows, entries, seen = [], [], set()
        for row in clusters.members(number):
            face = clusters.faces[row]
            if face.sha256 in seen or self.gallery.has(name, face.sha256):
                report.skipped.append((face.source, f"already enrolled as {name}"))
                continue
            other = self.gallery.enrolled_as(face.sha256, face.box)
            if other is not None:
                report.skipped.append((face.source, f"its face is enrolled as {other}"))
                continue
            seen.add(face.sha256)
            rows.append(row)
            entries.append({"label": name, "source": face.source, "sha256": face.sha256, "box": face.box})
            report.used.append({"source": face.source, "box": face.box, "faces_found": 1})
        if rows:
            self.gallery.add(clusters.vectors[rows], entries)
            self._refit()
        return report

    def forget(self, name: str, pictures=None) -> int:
        """Remove a character, or only its faces of these pictures (paths, folders, bytes, arrays or PIL
        images, known by their content); returns how many faces went. Unknown names raise KeyError, an
        unreadable picture ImageError, before anything is removed."""
        if name not in self.characters:
            raise KeyError(f"{name!r} is not enrolled; enrolled: {', '.join(self.characters) or 'nobody'}")
        digests = [None] if pictures is None else [_sha256(_read(src, describe(src)))
                                                   for src in _expand(_as_list(pictures))]
        removed = sum(self.gallery.remove(name, digest) for digest in digests)
        if removed:
            self._refit()
        return removed

    def names_of(self, picture) -> list[str]:
        """The names this picture's faces are enrolled under (known by its content), in enrolment order."""
        digest = _sha256(_read(picture, describe(picture)))
        return list(dict.fromkeys(e["label"] for e in self.gallery.entries if e["sha256"] == digest))

    def run_description(self) -> dict:
        """What made this recognizer's vectors, as a cluster run records it."""
        return {"backbone_id": self.embedder.backbone_id, **self.embedder.description}

    def naming_key(self) -> str:
        """A digest of everything that decides which faces this recognizer finds in a picture and what it
        names them: the embedder, the enrolled faces, the naming rule's setting, the detector, the crop
        margin. Two recognizers with the same key place any picture alike (sort skips what an earlier
        run with the same key placed)."""
        detector = self._detector if isinstance(self._detector, str) else f"{self._detector.kind}:{self._detector.path}"
        parts = [self.run_description(), [[e["label"], e["sha256"], e.get("box")] for e in self.gallery.entries],
                 self.stranger_refusal, self.margin, detector, str(self._cascade or "")]
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def forget_face(self, entry: dict) -> None:
        """Remove one face that enroll_face added (its entry: label, sha256 and box); KeyError if absent."""
        if not self.gallery.remove(entry["label"], entry["sha256"], entry["box"]):
            raise KeyError(f"no such face of {entry['label']!r} is enrolled")
        self._refit()

    def reload(self) -> None:
        """Take in what other programs saved to this gallery since it was read, keeping this
        recognizer's unsaved changes; a long-lived one (serve) calls it before each change."""
        with locked(self.path):
            self._catch_up()

    def save(self) -> Path:
        """Write the gallery atomically to its folder; returns the folder. Under the gallery's lock,
        changes another program saved since this one read the gallery are taken in first, so
        neither writer's changes are lost."""
        with locked(self.path):
            self._catch_up()
            rule = self._calibration
            self.gallery.save(self.path, self.head.to_arrays() if self.head else None,
                              {"calibration": {**asdict(rule), "weights": list(rule.weights)}} if rule else {})
        return self.path

    @contextmanager
    def saving(self):
        """Change the gallery in the with block, then save it. When the change or the save fails, the
        gallery in memory is put back as it was, so that it stays what is saved (a server keeps it)."""
        gallery, head, calibration = copy.copy(self.gallery), self.head, self._calibration
        gallery.entries = list(gallery.entries)  # arrays are replaced on change, never written into
        gallery.changes = list(gallery.changes)  # a failed change is not replayed by a later save
        try:
            yield
            self.save()
        except BaseException:
            self.gallery, self.head, self._calibration, self._normaliser = gallery, head, calibration, None
            raise

    # -- stages, for pipelines that run them apart (sort) ------------------------

    def face_crops(self, rgb: np.ndarray, faces: str) -> tuple[list[Box], list[np.ndarray]]:
        """Boxes and embedder-sized crops for one decoded picture, per the faces= mode.

        "auto" takes the whole picture as the face only when it looks like a face crop:
        small and square, with at most one detection (the face itself, or a part of it
        such as an eye). A crop is embedded as it was framed, as crops are enrolled:
        re-cropping it around the detection changes its vector enough to name 68% of
        held-out crops instead of 94%. A full picture with no face found has no face:
        taken whole, it was named as some enrolled character, or polluted enrolment.
        """
        size = self.embedder.input_size
        boxes = [] if faces == "whole" else self.detector.detect(rgb)
        h, w = rgb.shape[:2]
        crop_like = _looks_like_a_crop(w, h)
        if faces == "auto" and len(boxes) <= 1 and crop_like:
            boxes = []
        if boxes:
            return boxes, [crop_face(rgb, b, size, self.margin) for b in boxes]
        if faces == "detect" or (faces == "auto" and not crop_like):
            return [], []
        return [WholePicture(0, 0, w, h, 1.0)], [whole_image(rgb, size)]

    def vectors_for(self, crops: list[np.ndarray], keep: bool = False) -> np.ndarray | None:
        """The crops' vectors, or None when there is nothing to compare them with (no crops,
        or an empty gallery), so naming against an empty gallery never loads the network;
        keep=True embeds them for an empty gallery too, for callers that use the vectors
        themselves (sort grouping unknown faces)."""
        return self.embedder.embed(np.stack(crops)) if crops and (keep or len(self.gallery)) else None

    def name_faces(self, vectors: np.ndarray | None, boxes: list[Box]) -> list[Face]:
        """Apply the decision rule to embedded faces."""
        if not boxes:
            return []
        if not len(self.gallery):
            return [Face(b, None, 1.0, [], "the gallery is empty") for b in boxes]
        threshold = self.threshold
        names = list(self.gallery.characters)
        probabilities = self._calibration.probabilities(*self.scores(vectors))
        faces = []
        for box, p in zip(boxes, probabilities):
            order = np.argsort(-p)[:TOP_CANDIDATES]
            faces.append(_decide(box, [(names[i], float(p[i])) for i in order], threshold, self.stranger_refusal))
        return faces

    def scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, characters) normalised similarities (-inf: not among the NEIGHBOURS nearest
        characters, found by FAISS) and the head's log-probabilities, in `characters` order."""
        sims, rows = self.gallery.search(vectors, NEIGHBOURS)
        similarities = np.full((len(vectors), len(self.gallery.characters)), -np.inf, np.float32)
        for out, sim_row, row_ids in zip(similarities, sims, rows):
            out[row_ids[row_ids >= 0]] = sim_row[row_ids >= 0]
        if self._normaliser is None:
            self._normaliser = Normaliser(self.gallery.centroids(), self._stranger_bank()[0])
        probs = self.head.predict_proba(vectors) if self.head else np.ones((len(vectors), 1), np.float32)
        return self._normaliser(similarities, vectors), np.log(np.maximum(probs, 1e-6))

    # -- internals ---------------------------------------------------------------

    def _take(self, gallery: Gallery, head_arrays: dict | None, description: dict) -> None:
        """Use a gallery as loaded, with its head and naming rule, once it fits the embedder in use."""
        if self._check_backbone and not self._made_here(gallery):
            raise BackboneMismatchError(
                f"{self.path}: this gallery's vectors were made by another embedder (backbone "
                f"{gallery.backbone_id!r}, {_describe(gallery.preprocessing)}) than the one in use (backbone "
                f"{self.embedder.backbone_id!r}, {_describe(self.embedder.description)}). Open it with the "
                "backbone and projection it was made with (--backbone and --projection on the command line, "
                "backbone= and projection= in Python, or ANIMEFACE_BACKBONE), or enroll its characters again "
                "into a new gallery")
        if self._check_backbone and self.embedder.dim != gallery.dim:
            raise GalleryError(f"{self.path}: gallery.json: embedding_dim is {gallery.dim}, but this "
                               f"embedder makes {self.embedder.dim}-dimensional vectors")
        self.gallery = gallery
        self.head = SoftmaxHead.from_arrays(head_arrays) if head_arrays else None
        stored = description.get("calibration")
        self._calibration = Calibration(**{"rule": 1, **stored, "weights": tuple(stored["weights"])}) \
            if stored else None
        self._normaliser = None
        if self._calibration is None or self._calibration.rule != RULE:  # fitted by another version's rule
            self._refit()

    def _made_here(self, gallery: Gallery) -> bool:
        """Whether the gallery's vectors were made by the embedder in use."""
        return (gallery.backbone_id, gallery.preprocessing) == (self.embedder.backbone_id, self.embedder.description)

    def _catch_up(self) -> None:
        """With the gallery's lock held: if the saved gallery is not the one this recognizer read
        (or last saved), take the saved one and make this recognizer's unsaved changes on it again."""
        if not Gallery.exists(self.path):
            return
        saved = Gallery.load(self.path)
        if saved[0].revision is not None and saved[0].revision == self.gallery.revision:
            return
        mine = self.gallery
        self._take(*saved)
        if mine.changes:
            for entry, owner in self.gallery.replay(mine.changes):
                warnings.warn(f"{entry['source']}: another program enrolled its face as {owner} meanwhile; it is "
                              f"not enrolled as {entry['label']} (one face, one character)", stacklevel=3)
            self._refit()

    def _refit(self) -> None:
        """Fit the head and the naming rule to the gallery. The rule is calibrated against the
        embedder's stranger bank, so a recognizer opened with another embedder (check_backbone=False:
        list, forget) leaves it out, and the next one opened with the gallery's own embedder fits it."""
        labels = self.gallery.labels
        n_classes = len(set(labels))
        self.head = SoftmaxHead().fit(self.gallery.vectors, labels) if n_classes >= 2 else None
        self._calibration = calibrate(self.gallery.vectors, labels, self.head, *self._stranger_bank()) \
            if self._made_here(self.gallery) else None
        self._normaliser = None

    def _stranger_bank(self) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """The embedder's stranger bank as this gallery sees it (thresholds.gallery_bank)."""
        return gallery_bank(self.gallery.labels, *self.embedder.stranger_bank)

    def _progress(self, items, desc, total=None):
        from tqdm import tqdm

        return tqdm(items, desc=desc, total=total, unit="img", disable=not self.progress)


def _decide(box: Box, candidates: list[tuple[str, float]], threshold: float, refusal: float) -> Face:
    """The top candidate's name if its probability clears the threshold; else unknown, saying why."""
    top, probability = candidates[0]
    if probability >= threshold:
        return Face(box, top, probability, candidates)
    return Face(box, None, 1.0 - probability, candidates,
                f"probability {probability:.3f} that it is {top} is below the threshold {threshold:.3f}, "
                f"set to refuse {refusal:.0%} of strangers")


def _looks_like_a_crop(w: int, h: int) -> bool:
    return max(w, h) <= CROP_MAX_SIDE and max(w, h) <= CROP_MAX_ASPECT * min(w, h)


def _describe(embedder: dict) -> str:
    projection, sha256 = embedder.get("projection"), embedder.get("projection_sha256") or ""
    return f"projection {projection!r} of sha256 {sha256[:12]}" if projection else "no trained projection"


def _check_faces(faces: str) -> None:
    if faces not in FACE_MODES:
        raise ValueError(f"faces must be one of {', '.join(FACE_MODES)}; got {faces!r}")


def _read(src, label: str):
    """A path's bytes, read once so the same bytes are hashed and decoded; other inputs as they are."""
    return read_file(src, label) if isinstance(src, (str, os.PathLike)) else src


def _as_list(images) -> list:
    """One picture (a path, bytes, an array, a PIL image) as a list of one; many as they are."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, np.ndarray)) or not hasattr(images, "__iter__"):
        return [images]
    return images


def _expand(images) -> list:
    """Paths and folders become files (folders walked); other inputs pass through."""
    out = []
    for src in images:
        if isinstance(src, (str, os.PathLike)):
            out.extend(iter_image_files([src]))
        else:
            out.append(src)
    return out


def _sha256(data) -> str:
    if isinstance(data, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(data).tobytes() + str(data.shape).encode()).hexdigest()
    if hasattr(data, "tobytes"):  # PIL image
        return hashlib.sha256(data.tobytes() + str(data.size).encode()).hexdigest()
    return hashlib.sha256(bytes(data)).hexdigest()


_default: Recognizer | None = None


def default_recognizer() -> Recognizer:
    """The recognizer on the default gallery, reopened when ANIMEFACE_HOME or the backbone changes."""
    global _default
    from .backbone import resolve_backbone

    path = default_gallery_path()
    if _default is None or _default.path != path or _default.embedder.spec != resolve_backbone(None):
        _default = Recognizer(path)
    return _default


def enroll(name: str, images, faces: str = "auto") -> EnrollReport:
    """Enroll a character into the default gallery and save it."""
    rec = default_recognizer()
    report = rec.enroll(name, images, faces=faces)
    rec.save()
    return report


def identify(image: ImageLike, faces: str = "auto") -> list[Face]:
    """Name the faces in a picture against the default gallery."""
    return default_recognizer().identify(image, faces=faces)
