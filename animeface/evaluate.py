"""Measure how well enrolled characters are named, on a folder with one subfolder per character.

Each random split holds some characters out entirely as strangers, enrolls K
pictures of every other character and identifies all remaining pictures. Every
picture is decoded, detected and embedded once per run; each split then builds a
fresh gallery from those vectors exactly as `Recognizer.enroll` would (largest
face per picture, duplicates skipped, one refit per character) and names the
test faces with `Recognizer.name_faces`, the same decision `identify` makes.
Every picture not picked for enrolling is a test picture; those identical to an
enrolled one (the same file under two characters) are counted in each split.

A picture's answer is the name of its largest face (None when unknown or when
no face is found). Its score for ranking is the acceptance margin
min(probability - probability threshold, similarity - similarity threshold):
the recognizer names a face exactly when that margin is >= 0, so moving a
threshold on it traces accuracy against coverage through the real operating point.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import metrics
from .detect import Box
from .errors import AnimefaceError, ImageError, InputError
from .gallery import Gallery
from .io import iter_image_files, load_image, read_file
from .models import DEFAULT_DETECTOR, STRANGER_REFUSAL
from .recognizer import FACE_MODES, Recognizer

BOOTSTRAP_RESAMPLES = 1000
HEADLINES = ("top1", "top1_closed_set", "macro_f1", "auroc_unknown", "unknown_rejected", "false_accept",
             "calibration_error", "multilabel_precision", "multilabel_recall", "multilabel_f1")


@dataclass
class Picture:
    """One file of the data set, embedded once: its faces' boxes and vectors."""

    path: Path
    character: str
    sha256: str = ""
    boxes: list[Box] = field(default_factory=list)
    vectors: np.ndarray | None = None
    error: str | None = None

    @property
    def largest(self) -> int:
        return max(range(len(self.boxes)), key=lambda i: self.boxes[i].w * self.boxes[i].h)


def character_folders(root) -> dict[str, list[Path]]:
    """Character name -> its picture files, one subfolder of root per character."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}; give a folder with one "
                         "subfolder of pictures per character")
    folders = {d.name: iter_image_files([d]) for d in sorted(root.iterdir())
               if d.is_dir() and not d.name.startswith((".", "_"))}
    folders = {name: files for name, files in folders.items() if files}
    if len(folders) < 2:
        raise AnimefaceError(f"{root}: evaluate needs at least two character subfolders with pictures, "
                             f"found {len(folders)}")
    return folders


def embed_pictures(rec: Recognizer, folders: dict[str, list[Path]], faces: str) -> list[Picture]:
    """Decode, find faces in and embed every picture once, in batches."""
    pictures = [Picture(path, name) for name, files in folders.items() for path in files]
    chunk = rec.embedder.batch_size
    bar = rec._progress(None, "embed", total=len(pictures))
    for start in range(0, len(pictures), chunk):
        batch, crops = pictures[start:start + chunk], []
        for pic in batch:
            try:
                data = read_file(pic.path)
                pic.sha256 = hashlib.sha256(data).hexdigest()
                pic.boxes, found = rec.face_crops(load_image(data, name=str(pic.path)), faces)
            except ImageError as exc:
                pic.error, found = str(exc), []
            crops.append(found)
        flat = [c for found in crops for c in found]
        vectors = rec.embedder.embed(np.stack(flat)) if flat else np.zeros((0, rec.embedder.dim), np.float32)
        offset = 0
        for pic in batch:
            pic.vectors = vectors[offset:offset + len(pic.boxes)]
            offset += len(pic.boxes)
        bar.update(len(batch))
    bar.close()
    return pictures


def enroll_vectors(rec: Recognizer, name: str, pictures: list[Picture]) -> list[Picture]:
    """Add what rec.enroll(name, those files) adds, from vectors already made: the largest
    face of each picture, skipping unreadable, faceless and repeated ones. The caller
    refits once after the last character (rec.enroll refits after each, which gives the
    same head and naming rule).
    Returns the pictures used."""
    used, seen = [], set()
    for pic in pictures:
        if pic.error or not pic.boxes or pic.sha256 in seen or rec.gallery.has(name, pic.sha256):
            continue
        seen.add(pic.sha256)
        used.append(pic)
    if used:
        entries = [{"label": name, "source": str(p.path), "sha256": p.sha256, "box": list(p.boxes[p.largest])}
                   for p in used]
        rec.gallery.add(np.stack([p.vectors[p.largest] for p in used]), entries)
    return used


def make_split(folders: dict[str, list[Path]], shots: int, unknown: int, rng) -> tuple[list[str], dict]:
    """Random strangers, and K random pictures to enroll per known character."""
    names = list(folders)
    strangers = set(rng.choice(names, unknown, replace=False)) if unknown else set()
    known = [n for n in names if n not in strangers]
    chosen = {n: sorted(rng.choice(len(folders[n]), shots, replace=False)) for n in known}
    return known, chosen


def evaluate(root, shots: int = 10, unknown: int = 0, repeats: int = 1, seed: int = 0, faces: str = "auto",
             backbone=None, cascade=None, detector: str = DEFAULT_DETECTOR, progress: bool = False,
             bootstrap: int = BOOTSTRAP_RESAMPLES, stranger_refusal: float = STRANGER_REFUSAL) -> dict:
    """Enroll `shots` pictures per known character, identify the rest, over `repeats` random splits.

    Returns a JSON-ready dict: headline figures averaged over splits with 95%
    bootstrap intervals, the threshold against the best one on this data, the
    reliability diagram's bins, per-character rows, and the pooled per-picture records under "records"
    (for plots; drop it before printing).
    """
    if faces not in FACE_MODES:
        raise ValueError(f"faces must be one of {', '.join(FACE_MODES)}; got {faces!r}")
    folders = character_folders(root)
    check_split(folders, shots, unknown, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recognizer(Path(tmp) / "unsaved", backbone=backbone, cascade=cascade, detector=detector,
                         stranger_refusal=stranger_refusal, progress=progress)
        pictures = embed_pictures(rec, folders, faces)
        return score_splits(rec, folders, pictures, shots, unknown, repeats, seed, bootstrap,
                            {"root": str(root), "faces": faces})


def check_split(folders: dict[str, list[Path]], shots: int, unknown: int, repeats: int) -> None:
    """Refuse settings that leave nobody to enroll or nothing to test."""
    if shots < 1 or repeats < 1 or unknown < 0:
        raise ValueError(f"shots and repeats must be >= 1 and unknown >= 0; got shots={shots}, "
                         f"repeats={repeats}, unknown={unknown}")
    if unknown > len(folders) - 1:
        raise AnimefaceError(f"unknown={unknown} leaves no character to enroll ({len(folders)} characters)")
    short = [f"{n} ({len(f)})" for n, f in folders.items() if len(f) <= shots]
    if short:
        fewest = min(len(f) for f in folders.values())
        advice = f"try --shots {fewest - 1}" if fewest > 1 else "leave out the characters with one picture"
        raise AnimefaceError(f"with {shots} shots each character needs more than {shots} pictures, "
                             f"so some are left to test; too few in: {', '.join(short)}; {advice}")


def score_splits(rec: Recognizer, folders: dict[str, list[Path]], pictures: list[Picture], shots: int,
                 unknown: int, repeats: int, seed: int, bootstrap: int, settings: dict) -> dict:
    """The random splits of evaluate() on pictures already embedded (embed once, score many ways)."""
    check_split(folders, shots, unknown, repeats)
    by_name: dict[str, list[Picture]] = {}
    names_of: dict[str, set] = {}  # the same picture filed under several characters shows all of them
    for pic in pictures:
        by_name.setdefault(pic.character, []).append(pic)
        names_of.setdefault(pic.sha256, set()).add(pic.character)
    rng = np.random.default_rng(seed)
    records, splits = [], []
    for split in tqdm(range(repeats), desc="splits", unit="split", disable=not rec.progress):
        known, chosen = make_split(folders, shots, unknown, rng)
        rec.gallery = Gallery(rec.embedder.backbone_id, rec.embedder.dim, rec.embedder.description)
        rec.head = None
        enrolled = set()
        for name in known:
            enrolled |= {p.sha256 for p in enroll_vectors(rec, name, [by_name[name][i] for i in chosen[name]])}
        rec._refit()
        picked = {id(by_name[n][i]) for n in known for i in chosen[n]}
        test = [p for p in pictures if id(p) not in picked]
        found = _name_pictures(rec, test, known, names_of, split)
        records += found
        splits.append({"known": known, "strangers": sorted(set(folders) - set(known)),
                       "n_enrolled": len(rec.gallery), "n_test": len(test),
                       "n_test_copies_of_enrolled": sum(p.sha256 in enrolled for p in test),
                       "threshold": {"probability": rec.threshold, "stranger_refusal": rec.stranger_refusal,
                                     "source": rec.calibration.source},
                       "best_threshold": _best_threshold(found)})
    return _summarise(records, splits, list(folders), bootstrap, seed,
                      {**settings, "shots": shots, "unknown": unknown, "repeats": repeats, "seed": seed,
                       "backbone": rec.embedder.backbone_id})


def _name_pictures(rec: Recognizer, test: list[Picture], known: list[str], names_of: dict, split: int) -> list[dict]:
    """One record per test picture: truth, answer, and the probability behind the answer."""
    threshold = rec.threshold
    with_faces = [p for p in test if p.boxes]
    vectors = np.concatenate([p.vectors for p in with_faces]) if with_faces else None
    all_faces = rec.name_faces(vectors, [b for p in with_faces for b in p.boxes])
    records, offset = [], 0
    for pic in test:
        truth = pic.character if pic.character in known else None
        rec_ = {"split": split, "path": str(pic.path), "character": pic.character, "truth": truth,
                "truth_set": sorted(names_of[pic.sha256] & set(known)), "answer": None, "top": None,
                "probability": 0.0, "margin": -np.inf, "pred_set": [], "n_faces": len(pic.boxes)}
        if pic.boxes:
            faces = all_faces[offset:offset + len(pic.boxes)]
            offset += len(pic.boxes)
            face = faces[pic.largest]
            top, p = face.candidates[0]
            rec_.update(answer=face.label, top=top, probability=float(p), margin=float(p - threshold),
                        pred_set=sorted({f.label for f in faces if f.label}))
        records.append(rec_)
    return records


def _best_threshold(records: list[dict]) -> dict:
    """The probability threshold that would have maximised the share of right answers accepted
    minus the share of wrong answers and strangers accepted, on these test pictures."""
    p = np.array([r["probability"] for r in records])
    right = np.array([r["truth"] is not None and r["top"] == r["truth"] for r in records])
    if not right.any() or right.all():
        return {"probability": None, "objective": None}
    grid = np.unique(np.r_[0.0, np.quantile(p, np.linspace(0, 1, 101))])
    accept = p[None, :] >= grid[:, None]
    objective = accept[:, right].mean(axis=1) - accept[:, ~right].mean(axis=1)
    best = int(np.argmax(objective))
    return {"probability": float(grid[best]), "objective": float(objective[best])}


def _arrays(records: list[dict], known: list[str]) -> dict:
    is_known = np.array([r["truth"] is not None for r in records])
    return {
        "known": is_known,
        "right": np.array([r["answer"] is not None and r["answer"] == r["truth"] for r in records]),
        "top_right": np.array([r["top"] is not None and r["top"] == r["truth"] for r in records]),
        "rejected": np.array([r["answer"] is None for r in records]),
        "margin": np.array([r["margin"] for r in records]),
        "probability": np.array([r["probability"] for r in records]),
        "has_face": np.array([r["top"] is not None for r in records]),
        "truth_code": metrics.encode([r["truth"] for r in records], known),
        "answer_code": metrics.encode([r["answer"] for r in records], known),
        "n_classes": len(known),
        "ml_tp": np.array([len(set(r["truth_set"]) & set(r["pred_set"])) for r in records]),
        "ml_pred": np.array([len(r["pred_set"]) for r in records]),
        "ml_true": np.array([len(r["truth_set"]) for r in records]),
    }


def _figures_from_arrays(a: dict, idx: np.ndarray) -> dict:
    known, stranger = a["known"][idx], ~a["known"][idx]
    rejected = a["rejected"][idx]
    margin = a["margin"][idx]
    tp, n_pred, n_true = a["ml_tp"][idx].sum(), a["ml_pred"][idx].sum(), a["ml_true"][idx].sum()
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    nan = float("nan")
    return {
        "top1": float(a["right"][idx][known].mean()) if known.any() else nan,
        "top1_closed_set": float(a["top_right"][idx][known].mean()) if known.any() else nan,
        "macro_f1": metrics.macro_f1_codes(a["truth_code"][idx], a["answer_code"][idx], a["n_classes"]),
        "auroc_unknown": metrics.auroc(margin[known], margin[stranger]),
        "unknown_rejected": float(rejected[stranger].mean()) if stranger.any() else nan,
        "false_accept": float((~rejected[stranger]).mean()) if stranger.any() else nan,
        "calibration_error": metrics.calibration_error(a["probability"][idx][a["has_face"][idx]],
                                                       (a["top_right"][idx] & known)[a["has_face"][idx]]),
        "multilabel_precision": float(precision),
        "multilabel_recall": float(recall),
        "multilabel_f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
    }


def _summarise(records: list[dict], splits: list[dict], names: list[str], bootstrap: int, seed: int,
               settings: dict) -> dict:
    groups = np.array([r["split"] for r in records])
    per_split = [_arrays([r for r in records if r["split"] == i], s["known"]) for i, s in enumerate(splits)]
    offsets = np.r_[0, np.cumsum([len(a["known"]) for a in per_split])]

    def averaged(idx: np.ndarray) -> dict:
        """Figures per split on the chosen rows (idx into the pooled records), then the mean."""
        rows = [_figures_from_arrays(a, idx[(idx >= lo) & (idx < hi)] - lo)
                for a, lo, hi in zip(per_split, offsets[:-1], offsets[1:])]
        return {k: _mean([r[k] for r in rows]) for k in HEADLINES}

    point = averaged(np.arange(len(records)))
    resampled = metrics.bootstrap_samples(averaged, groups, bootstrap, seed=seed)
    out = {**settings, **{k: _clean(v) for k, v in point.items()}}
    for k in HEADLINES:
        ci = metrics.percentile_interval([r[k] for r in resampled])
        out[k + "_ci"] = list(ci) if ci else None
    stranger_records = [r for r in records if r["truth"] is None]
    out.update({
        "n_test": len(records),
        "n_test_known": len(records) - len(stranger_records),
        "n_test_strangers": len(stranger_records),
        "n_no_face": sum(r["n_faces"] == 0 for r in records),
        "n_several_faces": sum(r["n_faces"] > 1 for r in records),
        "bootstrap_resamples": bootstrap,
        "threshold": _mean_thresholds([s["threshold"] for s in splits]),
        "best_threshold": _mean_thresholds([s["best_threshold"] for s in splits]),
        "reliability": metrics.reliability([r["probability"] for r in records if r["top"] is not None],
                                           [r["top"] == r["truth"] for r in records if r["top"] is not None]),
        "accuracy_coverage": _coverage_table(records),
        "per_class": _per_class(records, names),
        "splits": splits,
        "records": records,
    })
    return out


def _mean(values: list) -> float:
    """Mean of the values that are neither None nor NaN; NaN when none is left."""
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _clean(v: float):
    """NaN becomes None, which JSON can carry."""
    return None if np.isnan(v) else v


def _mean_thresholds(rows: list[dict]) -> dict:
    """Thresholds averaged over splits; 'source' lists the sources seen."""
    out = {k: _clean(_mean([r[k] for r in rows])) for k in rows[0] if k != "source"}
    if "source" in rows[0]:
        out["source"] = ",".join(sorted({r["source"] for r in rows}))
    return out


def _coverage_table(records: list[dict]) -> list[dict]:
    """Accuracy at a few coverages, pooled over splits, ranking pictures by acceptance margin."""
    coverage, accuracy = accuracy_coverage_curve(records)
    table = []
    for target in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
        i = min(int(np.ceil(target * len(coverage))) - 1, len(coverage) - 1)
        table.append({"coverage": float(coverage[i]), "accuracy": float(accuracy[i])})
    answered = [r for r in records if r["answer"] is not None]
    table.append({"coverage": len(answered) / len(records), "operating_point": True,
                  "accuracy": float(np.mean([r["answer"] == r["truth"] for r in answered])) if answered else None})
    return table


def accuracy_coverage_curve(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and accuracy as the acceptance threshold falls: a stranger answered is always wrong."""
    return metrics.accuracy_coverage([r["margin"] for r in records],
                                     [r["top"] is not None and r["top"] == r["truth"] for r in records])


def _per_class(records: list[dict], names: list[str]) -> dict:
    """Per character, pooled over splits: as a known character and as a stranger."""
    table = {}
    for name in names:
        own = [r for r in records if r["character"] == name and r["truth"] == name]
        named = [r for r in records if r["answer"] == name]
        strange = [r for r in records if r["character"] == name and r["truth"] is None]
        right = sum(r["answer"] == name for r in own)
        precision = right / len(named) if named else 0.0
        recall = right / len(own) if own else 0.0
        wrong = Counter(r["answer"] for r in own if r["answer"] not in (None, name))
        table[name] = {
            "n": len(own), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "unknown": sum(r["answer"] is None for r in own) / len(own) if own else None,
            "confused_with": wrong.most_common(1)[0][0] if wrong else None,
            "n_as_stranger": len(strange),
            "rejected_as_stranger": sum(r["answer"] is None for r in strange) / len(strange) if strange else None,
        }
    return table


def format_report(result: dict) -> str:
    """A plain-text report of an evaluate() result."""
    def fig(key, pct=True):
        v, ci = result.get(key), result.get(key + "_ci")
        if v is None:
            return "n/a"
        f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
        return f"{f(v)}  [{f(ci[0])}, {f(ci[1])}]" if ci else f(v)

    t, b = result["threshold"], result["best_threshold"]
    lines = [
        f"{result['root']}: {result['shots']} shots, {result['unknown']} stranger(s), {result['repeats']} split(s), "
        f"faces={result['faces']}, backbone {result['backbone']}",
        f"test pictures: {result['n_test']} ({result['n_test_known']} known, {result['n_test_strangers']} strangers; "
        f"{result['n_no_face']} without a face, {result['n_several_faces']} with several)",
        f"known faces named right {fig('top1')}; strangers falsely named "
        + (fig('false_accept') if result["n_test_strangers"] else "not measured (hold characters out as strangers "
           "with --unknown N)"),
        "figures with 95% bootstrap intervals:",
        f"  known faces named right           {fig('top1')}",
        f"  strangers falsely named           {fig('false_accept')}",
        f"  strangers called unknown          {fig('unknown_rejected')}",
        f"  AUROC known vs stranger           {fig('auroc_unknown', False)}",
        f"  calibration error of the score    {fig('calibration_error', False)}",
        f"  top guess right, ignoring unknown {fig('top1_closed_set')}",
        f"  macro-F1                          {fig('macro_f1', False)}",
        f"  multi-label P / R / F1            {fig('multilabel_precision', False)} / "
        f"{fig('multilabel_recall', False)} / {fig('multilabel_f1', False)}",
        f"threshold: probability {_number(t['probability'])}, set to refuse {t['stranger_refusal']:.0%} of "
        f"strangers ({t['source']})",
    ]
    if b.get("probability") is not None:
        lines.append(f"best on this data: probability {b['probability']:.3f} "
                     f"(accepted right minus accepted wrong = {b['objective']:.3f})")
    lines.append("accuracy at coverage: " + ", ".join(
        f"{100 * row['coverage']:.0f}%{'*' if row.get('operating_point') else ''}: " + _pct(row["accuracy"])
        for row in result["accuracy_coverage"]) + "   (* = the recognizer's own threshold)")
    lines.append(f"{'character':<24}{'n':>6}{'prec':>7}{'recall':>7}{'F1':>7}{'unknown':>8}  confused with")
    for name, row in result["per_class"].items():
        if row["n"]:
            lines.append(f"{name[:23]:<24}{row['n']:>6}{row['precision']:>7.2f}{row['recall']:>7.2f}{row['f1']:>7.2f}"
                         f"{row['unknown']:>8.2f}  {row['confused_with'] or '-'}")
    for name, row in result["per_class"].items():
        if row["n_as_stranger"]:
            lines.append(f"{name[:23]:<24}{row['n_as_stranger']:>6}  as a stranger: "
                         f"{_pct(row['rejected_as_stranger'])} rejected")
    return "\n".join(lines)


def _number(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
