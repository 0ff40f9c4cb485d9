"""Group faces nobody has named by character, so that a person can name whole groups at once.

The method is average linkage on cosine similarity, over a FAISS neighbour graph so
that memory grows with the number of faces, not its square:

- similarity is measured once the look all the faces share is removed (Similarity):
  a set of pictures shares a style that the projection, trained on other characters,
  does not remove, and that common part makes every pair look alike;
- two groups merge while the mean similarity of their pairs clears the threshold.
  Pairs that are not neighbours count as 0, what two different characters score
  once the shared look is removed, so leaving them out never joins two groups. Faces of one picture
  never share a group: an illustration's faces share its artist's style and colours,
  but are almost always different characters;
- then every face must clear the same threshold on its mean similarity to the rest
  of its group, and groups smaller than MIN_GROUP are dissolved. What fails stays
  ungrouped: a face is never forced into the nearest group.

The threshold comes from the embedder's calibration (the projection's card): the
midpoint of the mean similarity of same-character and of different-character pairs,
measured on characters left out of its training (train.pair_similarity).
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import AnimefaceError
from .files import read_npy, taken, write_bytes
from .gallery import face_problem

#: Smallest group kept: enough faces to enroll a character from (5 shots is the fewest we measure naming with).
MIN_GROUP = 5
#: Neighbours per face in the similarity graph.
NEIGHBOURS = 30


class ClusterError(AnimefaceError):
    """Faces cannot be grouped: no threshold is known for this embedder."""


def threshold_from(calibration: dict | None) -> float:
    """The merge threshold from an embedder card's pair_similarity: the midpoint of the mean
    similarity of same-character and of different-character pairs."""
    try:
        same, different = float(calibration["same"]), float(calibration["different"])
    except (TypeError, KeyError, ValueError):
        raise ClusterError("this embedder carries no pair-similarity calibration to group faces with (a projection "
                           "trained by this version of `animeface train` does); pass a similarity threshold") from None
    if not -1 <= different < same <= 1:
        raise ClusterError(f"the embedder's pair-similarity calibration is not usable: same {same}, different {different}")
    return checked((same + different) / 2)


def checked(threshold: float) -> float:
    """The threshold, if it is a similarity above 0 and below 1: pairs outside the neighbour graph
    count as 0, so a threshold of 0 or less would have to join every group with every other."""
    threshold = float(threshold)
    if not 0 < threshold < 1:
        raise ClusterError(f"the similarity threshold must be above 0 and below 1, got {threshold}")
    return threshold


class Similarity:
    """Cosine similarity of a collection's faces once the look they all share is removed.

    A set of pictures shares a look (its artists, its era) that the projection, trained
    on other characters, does not remove, and it makes every pair alike. Each face is
    taken as that shared part plus its own; the shared part's squared length is the
    mean similarity of all pairs, c, and what is compared is the cosine of the faces'
    own parts: (dot - c) / (1 - c). Removing the mean vector instead would also remove
    the identity of a character that fills most of a folder, and make all the other
    faces alike in pointing away from it.
    """

    def __init__(self, vectors: np.ndarray):
        unit = np.asarray(vectors, dtype=np.float32)
        self.unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        self.n = len(unit)
        self.total = self.unit.sum(axis=0, dtype=np.float64)
        #: The mean similarity of all pairs of different faces: the shared part's squared length.
        self.shared = float((self.total @ self.total - self.n) / max(self.n * (self.n - 1), 1))

    def of(self, dot) -> np.ndarray:
        """The similarity of pairs whose plain dot products are `dot`."""
        return (np.asarray(dot, dtype=np.float64) - self.shared) / max(1 - self.shared, 1e-6)

    def pairs(self, i: np.ndarray, j: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """The similarity of the pairs (i[k], j[k]), their dot products computed a chunk at a time."""
        dot = np.concatenate([np.einsum("ij,ij->i", self.unit[i[s:s + chunk]], self.unit[j[s:s + chunk]])
                              for s in range(0, len(i), chunk)] or [np.zeros(0, np.float32)])
        return self.of(dot)

    def within(self, rows: np.ndarray) -> np.ndarray:
        """The matrix of similarities among `rows`, diagonal included (meaningless there)."""
        return self.of(self.unit[rows] @ self.unit[rows].T)


def group(vectors: np.ndarray, threshold: float, min_size: int = MIN_GROUP, neighbours: int = NEIGHBOURS,
          pictures=None) -> np.ndarray:
    """A group number per vector, -1 for ungrouped; groups are numbered 0, 1, ... largest first.
    pictures, an id per vector, keeps the faces of one picture in different groups."""
    n = len(vectors)
    if n < max(min_size, 4):
        return np.full(n, -1)
    faces = Similarity(vectors)
    first, second = neighbour_pairs(faces.unit, min(neighbours, n - 1))
    labels = average_linkage(n, first, second, faces.pairs(first, second), threshold, pictures)
    return _number_by_size(_trim(faces, labels, threshold, min_size))


def neighbour_pairs(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each face's k most similar faces (by inner product), as unique pairs (i < j).

    The search is exact: FAISS compares every pair in blocks, so memory stays linear
    while time grows with n squared (about 2 minutes for 100,000 faces here, far less than
    embedding them takes). An inverted-file index was 1.9x faster at 40,000 faces but found
    only 18.5% of the true 30 nearest (benchmarks/cluster_scale.py --ivf 40000)."""
    import faiss

    n, dim = unit.shape
    index = faiss.IndexFlatIP(dim)
    index.add(unit)
    _, ids = index.search(unit, k + 1)
    rows = np.repeat(np.arange(n), k + 1)
    ids = ids.ravel()
    valid = (ids >= 0) & (ids != rows)
    low, high = np.minimum(rows, ids)[valid], np.maximum(rows, ids)[valid]
    _, unique = np.unique(low.astype(np.int64) * n + high, return_index=True)
    return low[unique], high[unique]


def average_linkage(n: int, first, second, similarity, threshold: float, pictures=None) -> np.ndarray:
    """Merge the pair of groups with the highest mean pair similarity while it clears the
    threshold; pairs absent from the graph count as 0, and two groups holding faces of one
    picture (pictures: an id per face) never merge. Returns a group root per face."""
    held = [{p} for p in (range(n) if pictures is None else np.asarray(pictures).tolist())]
    links: list[dict[int, float]] = [{} for _ in range(n)]
    for i, j, s in zip(first.tolist(), second.tolist(), similarity.tolist()):
        links[i][j] = links[j][i] = s
    size = [1] * n
    parent = list(range(n))
    heap = [(-s, i, j) for i, j, s in zip(first.tolist(), second.tolist(), similarity.tolist()) if s >= threshold]
    heapq.heapify(heap)
    while heap:
        negative, a, b = heapq.heappop(heap)
        if parent[a] != a or parent[b] != b or b not in links[a]:
            continue  # a group that has since merged into another
        mean = links[a][b] / (size[a] * size[b])
        if mean < -negative - 1e-9:  # grown since this entry was made: queue it at its present value
            if mean >= threshold:
                heapq.heappush(heap, (-mean, a, b))
            continue
        if not held[a].isdisjoint(held[b]):
            continue  # one picture rarely shows one character twice: its faces stay apart
        big, small = (a, b) if len(links[a]) >= len(links[b]) else (b, a)
        parent[small] = big
        size[big] += size[small]
        held[big] |= held[small]
        del links[big][small]
        for other, total in links[small].items():
            if other == big:
                continue
            del links[other][small]
            joined = links[big].get(other, 0.0) + total
            links[big][other] = links[other][big] = joined
            mean = joined / (size[big] * size[other])
            if mean >= threshold:
                heapq.heappush(heap, (-mean, big, other))
        links[small] = {}
    roots = np.array(parent)
    while True:  # each face to its final group
        above = roots[roots]
        if np.array_equal(above, roots):
            return roots
        roots = above


def _trim(faces: Similarity, labels: np.ndarray, threshold: float, min_size: int, chunk: int = 2048) -> np.ndarray:
    """Ungroup faces whose mean similarity to the rest of their group falls below the
    threshold, then groups left smaller than min_size; -1 marks ungrouped."""
    labels = labels.copy()
    for _ in range(2):  # a dissolved group changes no other, but a trimmed face changes its group's mean
        _dissolve_small(labels, min_size)
        for number in np.unique(labels[labels >= 0]):
            members = np.flatnonzero(labels == number)
            own = np.concatenate([_row_means(faces, members, members[s:s + chunk])
                                  for s in range(0, len(members), chunk)])
            labels[members[own < threshold]] = -1
    _dissolve_small(labels, min_size)
    return labels


def _row_means(faces: Similarity, members: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each of rows' mean similarity to the other members."""
    similarity = faces.of(faces.unit[rows] @ faces.unit[members].T)
    similarity[rows[:, None] == members[None, :]] = 0.0
    return similarity.sum(axis=1) / (len(members) - 1)


def _dissolve_small(labels: np.ndarray, min_size: int) -> None:
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    labels[np.isin(labels, ids[counts < min_size])] = -1


def _number_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber groups 0, 1, ... from the largest (ties: the one whose first face comes first)."""
    out = np.full(len(labels), -1)
    ids, first, counts = np.unique(labels[labels >= 0], return_index=True, return_counts=True)
    grouped = np.flatnonzero(labels >= 0)
    order = sorted(range(len(ids)), key=lambda g: (-counts[g], grouped[first[g]]))
    for number, g in enumerate(order):
        out[labels == ids[g]] = number
    return out


# -- a run's results -------------------------------------------------------------------

RUN_FILE, VECTORS_FILE, SHEET_FILE = "cluster.json", "cluster-vectors.npy", "index.html"
RUN_FORMAT = 1
#: Largest run file read (a run of a million faces is under 4 GB of vectors).
MAX_RUN_BYTES = 4 << 30
#: Thumbnails shown per group on the contact sheet, and for the ungrouped faces.
SHOWN_PER_GROUP, SHOWN_UNGROUPED = 60, 300


@dataclass
class ClusterFace:
    """One face found: the picture it is in, where, and the picture's sha256 (for enroll)."""

    source: str
    box: list[int]
    sha256: str

    def to_dict(self) -> dict:
        return {"source": self.source, "box": list(self.box)}


@dataclass
class Clusters:
    """Faces grouped by character: `group[i]` is face i's group (0 = the largest), -1 ungrouped.
    Faces the gallery already names are set aside in `named` (face, name) and not grouped."""

    faces: list[ClusterFace]
    vectors: np.ndarray
    group: np.ndarray
    threshold: float
    named: list[tuple[ClusterFace, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: Small JPEG crops of `faces`, for the contact sheet (kept only when asked for).
    thumbnails: list[bytes] | None = None

    @property
    def count(self) -> int:
        """How many groups there are."""
        return int(self.group.max()) + 1 if len(self.group) else 0

    @property
    def groups(self) -> list[list[ClusterFace]]:
        """The groups, largest first; groups[0] is the one numbered 1 in to_dict and on the sheet."""
        return [[self.faces[i] for i in np.flatnonzero(self.group == g)] for g in range(self.count)]

    @property
    def ungrouped(self) -> list[ClusterFace]:
        return [self.faces[i] for i in np.flatnonzero(self.group < 0)]

    def members(self, number: int) -> np.ndarray:
        """Rows of the faces in the group numbered `number` (1 = the largest)."""
        if not 1 <= number <= self.count:
            raise ClusterError(f"there is no group {number}: this run has groups 1 to {self.count}" if self.count
                               else "this run found no groups")
        return np.flatnonzero(self.group == number - 1)

    def to_dict(self) -> dict:
        """The JSON form: clusters (id from 1, largest first), ungrouped faces, and named ones."""
        return {"clusters": [{"id": g + 1, "faces": [f.to_dict() for f in faces]} for g, faces in enumerate(self.groups)],
                "ungrouped": [f.to_dict() for f in self.ungrouped],
                "named": [{**f.to_dict(), "label": name} for f, name in self.named],
                "threshold": round(self.threshold, 4)}

    def save(self, folder: Path, embedder: dict) -> Path:
        """Write the run into folder: its faces and groups, their vectors (so that naming a group
        later embeds nothing again), and the contact sheet. Existing files are never replaced."""
        folder = Path(folder)
        check_free(folder)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(self.vectors, dtype="<f4"), allow_pickle=False)
        run = {"format_version": RUN_FORMAT, "embedder": embedder, "dim": int(self.vectors.shape[1]),
               "threshold": self.threshold,
               "faces": [{**f.to_dict(), "sha256": f.sha256, "group": int(g) + 1 if g >= 0 else None}
                         for f, g in zip(self.faces, self.group)]}
        write_bytes(folder / VECTORS_FILE, buffer.getvalue())
        write_bytes(folder / RUN_FILE, json.dumps(run, ensure_ascii=False, indent=1).encode("utf-8", "backslashreplace"))
        write_bytes(folder / SHEET_FILE, contact_sheet(self, folder).encode("utf-8", "backslashreplace"))
        return folder / SHEET_FILE

    @classmethod
    def load(cls, folder: Path) -> tuple[Clusters, dict]:
        """Read a saved run and the embedder description it was made with; nothing in it can run
        code, and a damaged or foreign file is a ClusterError naming it."""
        folder = Path(folder)
        path = folder / RUN_FILE
        if not path.is_file():
            raise ClusterError(f"{folder}: no cluster run here (no {RUN_FILE}); make one with "
                               f"'animeface cluster PATH... --out {folder}'")
        try:
            for name in (RUN_FILE, VECTORS_FILE):  # regular files only (a FIFO would block), of a sane size
                if not (folder / name).is_file() or (folder / name).stat().st_size > MAX_RUN_BYTES:
                    raise ValueError(f"{name} is not a regular file of at most {MAX_RUN_BYTES} bytes")
            run = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(run, dict) or type(run.get("format_version")) is not int \
                    or run["format_version"] != RUN_FORMAT:
                raise ValueError(f"not a cluster run of format {RUN_FORMAT}")
            faces, embedder = run["faces"], run["embedder"]
            if not isinstance(faces, list) or not isinstance(embedder, dict):
                raise ValueError("faces must be a list and embedder an object")
            parsed, group = [], []
            for face in faces:
                number = face.get("group") if isinstance(face, dict) else "missing"
                problem = face_problem(face) if isinstance(face, dict) else ("", "must be an object")
                if not problem and not (number is None or type(number) is int and 1 <= number <= len(faces)):
                    problem = "group", "must be a group number or null"
                if problem:
                    raise ValueError(f"faces[{len(parsed)}].{problem[0]} {problem[1]}")
                parsed.append(ClusterFace(face["source"], face["box"], face["sha256"]))
                group.append(number - 1 if number else -1)
            dim = run["dim"]
            if type(dim) is not int or not 0 < dim <= 65536:
                raise ValueError("dim must be a whole number from 1 to 65536")
            with open(folder / VECTORS_FILE, "rb") as fh:
                vectors = read_npy(fh, (len(parsed), dim), np.dtype("<f4"))
            if len(vectors) and np.abs(np.linalg.norm(vectors, axis=1) - 1).max() > 1e-3:
                raise ValueError(f"{VECTORS_FILE} holds vectors that are not of unit length, as embedded ones are")
            threshold = checked(run["threshold"])
        except Exception as exc:  # noqa: BLE001 - parsers of hostile bytes raise many types (RecursionError, ...)
            raise ClusterError(f"{folder}: not a usable cluster run, as 'animeface cluster --out' writes "
                               f"({type(exc).__name__}: {exc})") from None
        return cls(parsed, vectors, np.array(group, dtype=int), threshold), embedder


def check_free(folder: Path) -> None:
    """ClusterError if folder is not a folder, or already holds a run's files: a run never replaces a file."""
    problem = taken(Path(folder), (RUN_FILE, VECTORS_FILE, SHEET_FILE))
    if problem:
        raise ClusterError(problem)


def contact_sheet(clusters: Clusters, folder: Path) -> str:
    """A page of face thumbnails, one section per group, largest first, for a person choosing names;
    under each group, the command that names it from `folder`, where the run is saved."""
    def tile(row: int) -> str:
        face = clusters.faces[row]
        title = html.escape(f"{face.source} at {tuple(face.box)}", quote=True)
        if clusters.thumbnails is None:
            return f'<div class="face" title="{title}">{html.escape(Path(face.source).name)}</div>'
        data = base64.b64encode(clusters.thumbnails[row]).decode()
        return f'<img class="face" title="{title}" alt="{title}" src="data:image/jpeg;base64,{data}">'

    def section(heading: str, rows: np.ndarray, shown: int, hint: str = "") -> str:
        more = f'<p class="more">and {len(rows) - shown} more (all in cluster.json)</p>' if len(rows) > shown else ""
        return (f"<section><h2>{html.escape(heading)}</h2>{hint}<div class=\"faces\">"
                + "".join(tile(r) for r in rows[:shown]) + f"</div>{more}</section>")

    parts = []
    for g in range(clusters.count):
        rows = np.flatnonzero(clusters.group == g)
        command = f"animeface enroll NAME --cluster {g + 1} --from {shlex.quote(str(folder))}"
        hint = f'<p class="how"><code>{html.escape(command)}</code></p>'
        parts.append(section(f"Group {g + 1}: {len(rows)} faces", rows, SHOWN_PER_GROUP, hint))
    ungrouped = np.flatnonzero(clusters.group < 0)
    if len(ungrouped):
        parts.append(section(f"Ungrouped: {len(ungrouped)} faces", ungrouped, SHOWN_UNGROUPED))
    summary = (f"{len(clusters.faces) + len(clusters.named)} faces: {len(clusters.named)} named by the gallery and "
               f"set aside; the other {len(clusters.faces)} in {clusters.count} "
               f"groups, {len(ungrouped)} ungrouped")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            "content=\"width=device-width, initial-scale=1\"><title>animeface: faces by character</title><style>"
            "body{font-family:sans-serif;margin:1em;background:#fafafa}h2{margin:.2em 0;font-size:1.1em}"
            "section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.8em 0}"
            ".faces{display:flex;flex-wrap:wrap;gap:4px}.face{width:96px;height:96px;object-fit:cover;"
            "border-radius:4px;font-size:10px;overflow:hidden;background:#eee}.how,.more{color:#555;margin:.2em 0}"
            "</style></head><body><h1>Faces grouped by character</h1>"
            f"<p>{html.escape(summary)}. Hover a face to see its picture. Name a group with the command under it.</p>"
            + "".join(parts) + "</body></html>\n")
