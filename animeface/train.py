"""Train the embedder's projection on labelled anime faces (one folder per character).

The projection is a within-class whitening (WCCN, as in speaker and face verification):
principal components of the training faces, then the directions in which one
character's pictures vary are scaled down. It is fitted in closed form, so a seed
fixes the result, and it carries over to characters it never saw, because it learns
which variations do not change who a face is rather than any one character.

Before fitting on every character, `train` measures what users will get: whole
characters are left out of the fit in turn, enrolled from a few shots and named by the
same ridge head the recognizer uses; the figures for the untrained recipe and the
projection go into the card.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from . import models
from .files import write_bytes
from .crop import crop_face, whole_image
from .embed import MAX_NAME, Embedder, Projection, Recipe
from .errors import AnimefaceError, ImageError, ModelError
from .evaluate import character_folders
from .io import load_image

#: Principal components kept before whitening.
COMPONENTS = 768
#: Ridge added to the within-class covariance, as a share of its mean eigenvalue. Chosen on
#: characters left out of the fit (38 characters, 5 folds, 6 enrolled from 5 shots + 2 strangers):
#: 0.3 gave AUROC 0.921 and top-1 93.4%, against 0.914 and 92.5% at 0.03 (docs/benchmarks.md).
SHRINKAGE = 0.3
#: Faces per training character in the stranger bank the projection carries.
STRANGERS_PER_CHARACTER = 20
#: The fewest characters train takes: its figures leave a fifth of them out in turn (FOLDS), and each
#: fold must keep enough characters to fit on.
MIN_CHARACTERS = 10
#: Shots enrolled per left-out character when measuring.
SHOTS = (5, 10, 20)
FOLDS = 5
#: Each training face is seen as itself, mirrored, and augmented.
VIEWS = ("original", "mirror", "augmented")
#: Names what augmented() does, for the feature cache's key: change it whenever augmented() changes.
AUGMENTATION = "reframe 65-115%, shift 10%, light, blur, mirror"


def fit_projection(vectors: np.ndarray, labels: np.ndarray, components: int = COMPONENTS,
                   shrinkage: float = SHRINKAGE) -> tuple[np.ndarray, np.ndarray]:
    """(mean, matrix) of the within-class whitening of `vectors`."""
    mean = vectors.mean(axis=0)
    centred = (vectors - mean).astype(np.float64)
    components = min(components, len(vectors) - 1, vectors.shape[1])
    basis = np.linalg.svd(centred, full_matrices=False)[2][:components].T
    reduced = centred @ basis
    classes, index = np.unique(labels, return_inverse=True)
    means = np.zeros((len(classes), components))
    np.add.at(means, index, reduced)
    means /= np.bincount(index)[:, None]
    within = reduced - means[index]
    covariance = within.T @ within / len(within)
    covariance += shrinkage * np.trace(covariance) / components * np.eye(components)
    values, vectors_ = np.linalg.eigh(covariance)
    whitening = vectors_ @ np.diag(values ** -0.5) @ vectors_.T
    return mean.astype(np.float32), (basis @ whitening).astype(np.float32)


def augmented(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A reframed copy: a square of 65-115% of the picture's side, its centre moved by up to 10%
    (past the border, edges replicated as crop_face does), with brightness and contrast jitter,
    sometimes a blur or a mirror. Detectors frame one face differently from the crops enrolled,
    and two pictures of one character differ so; the projection must learn to ignore both."""
    import cv2

    h, w = rgb.shape[:2]
    side = max(h, w)
    centre = (w / 2 + rng.uniform(-0.1, 0.1) * side, h / 2 + rng.uniform(-0.1, 0.1) * side)
    new_side = side * rng.uniform(0.65, 1.15)
    box = (centre[0] - new_side / 2, centre[1] - new_side / 2, new_side, new_side)
    out = crop_face(rgb, box, max(1, round(new_side)), margin=0.0).astype(np.float32)
    out = out * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.2))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out, 0, 255).astype(np.uint8)


def training_features(embedder: Embedder, roots, seed: int, progress: bool):
    """Recipe vectors of every face crop under roots: (original, mirror, augmented) views,
    their character labels, and the files that could not be read.

    Cached in ANIMEFACE_CACHE/features by everything that shapes them (the embedder, the
    seed, the labels and each file's content), so training again with other settings,
    measuring, or the same pictures copied elsewhere does not embed again.
    """
    files, labels = training_files(roots)
    if not files:
        raise AnimefaceError("no pictures to train on")
    key = json.dumps([embedder.backbone_id, embedder.recipe.to_dict(), AUGMENTATION, seed, labels,
                      [models.sha256_file(f) for f in files]])
    cached = models.cache_dir() / "features" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                return {v: npz[v] for v in VIEWS}, npz["labels"], [str(m) for m in npz["failed"]]
        except (OSError, ValueError, KeyError):
            pass  # damaged: embed again and replace it
    views, kept, failed = _embed_views(embedder, files, seed, progress)
    labels = np.array(labels)[kept]
    buffer = io.BytesIO()
    np.savez(buffer, labels=labels, failed=np.array(failed, dtype=str), **views)
    write_bytes(cached, buffer.getvalue(), replace=True)
    return views, labels, failed


def training_files(roots) -> tuple[list[Path], list[str]]:
    """Every face picture under roots (one folder per character), and its label: the root's number
    and the folder's name ("0:gura"), so that two roots' characters of one name stay apart."""
    files, labels = [], []
    for number, root in enumerate(roots):
        for name, paths in character_folders(root).items():
            files += paths
            labels += [f"{number}:{name}"] * len(paths)
    return files, labels


def _embed_views(embedder: Embedder, files: list[Path], seed: int, progress: bool):
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    size = embedder.input_size
    views = {key: [] for key in VIEWS}
    kept, failed = [], []
    bar = tqdm(total=len(files), desc="train: embed", unit="img", disable=not progress)
    for start in range(0, len(files), embedder.batch_size):
        batch = {key: [] for key in VIEWS}
        for i in range(start, min(start + embedder.batch_size, len(files))):
            try:
                rgb = load_image(files[i])
            except ImageError as exc:
                failed.append(str(exc))
                continue
            crop = whole_image(rgb, size)
            batch["original"].append(crop)
            batch["mirror"].append(crop[:, ::-1])
            batch["augmented"].append(whole_image(augmented(rgb, rng), size))
            kept.append(i)
        if batch["original"]:
            for key, crops in batch.items():
                views[key].append(embedder.features(np.stack(crops)))
        bar.update(min(embedder.batch_size, len(files) - start))
    bar.close()
    if not kept:
        raise AnimefaceError("none of the pictures to train on could be read")
    return {key: np.concatenate(parts) for key, parts in views.items()}, kept, failed


def leave_characters_out(views: dict, labels: np.ndarray, recipe: Recipe, seed: int, shots=SHOTS,
                         folds: int = FOLDS) -> tuple[dict, dict]:
    """What the projection does for characters left out of its fit, mean over folds: closed-set
    top-1 when each is enrolled from `shots` pictures (untrained recipe and projection), and
    the calibration that grouping faces derives its threshold from (pair_similarity)."""
    from .head import SoftmaxHead

    characters = np.unique(labels)
    order = np.random.default_rng(seed).permutation(len(characters))
    scores = {"untrained": {k: [] for k in shots}, "trained": {k: [] for k in shots}}
    pairs = []
    for fold in range(folds):
        left_out = characters[order[fold::folds]]
        fit_rows = ~np.isin(labels, left_out)
        projection = fitted_projection({k: v[fit_rows] for k, v in views.items()}, labels[fit_rows], recipe, seed)
        spaces = {"untrained": views["original"], "trained": projection(views["original"])}
        pairs.append(pair_similarity(spaces["trained"][~fit_rows], labels[~fit_rows]))
        rng = np.random.default_rng([seed, fold])
        for k in shots:
            if min(np.count_nonzero(labels == c) for c in left_out) <= k:
                continue  # a character with no picture left to name: not measurable at k shots
            enrolled, tested = [], []
            for character in left_out:
                rows = rng.permutation(np.flatnonzero(labels == character))
                enrolled += list(rows[:k])
                tested += list(rows[k:])
            for space, vectors in spaces.items():
                head = SoftmaxHead().fit(vectors[enrolled], list(labels[enrolled]))
                guess = np.array(head.classes)[head.predict_proba(vectors[tested]).argmax(axis=1)]
                scores[space][k].append(float(np.mean(guess == labels[tested])))
    top1 = {space: {f"{k} shots": round(float(np.mean(v)), 4) if v else None for k, v in by_shots.items()}
            for space, by_shots in scores.items()}
    calibration = {kind: round(float(np.mean([p[kind] for p in pairs])), 4) for kind in ("same", "different")}
    return top1, {**calibration, "measured_on": "characters left out of the fit, each fold with the look its faces share removed"}


def pair_similarity(vectors: np.ndarray, labels: np.ndarray, limit: int = 3000) -> dict:
    """Mean cosine similarity of same-character and of different-character pairs, once the
    look all faces share is removed as grouping does (cluster.Similarity); at most `limit` faces,
    drawn at random, so that the pairs fit in memory."""
    from .cluster import Similarity

    if len(labels) > limit:
        rows = np.sort(np.random.default_rng(0).choice(len(labels), limit, replace=False))
        vectors, labels = vectors[rows], labels[rows]
    similarity = Similarity(vectors).within(np.arange(len(labels)))
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    different = labels[:, None] != labels[None, :]
    return {"same": float(similarity[same].mean()), "different": float(similarity[different].mean())}


def check_output(out, name: str) -> Path:
    """out/name, where train writes NAME.npz and NAME.json, checked before minutes of embedding:
    name must be a plain file name (ValueError), so nothing lands outside out; out must be a folder
    or not exist yet, and hold neither file (ModelError)."""
    if not isinstance(name, str) or name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"name must be a plain file name, with no folder in it; got {name!r}")
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a folder; choose a folder for the projection")
    Projection.check_free(out / name)
    return out / name


def train(roots, out: Path, *, name: str = "projection", backbone=None, seed: int = 0,
          recipe: Recipe | None = None, progress: bool = True, command: str | None = None) -> Path:
    """Fit a projection on the faces under roots and save it with its card in `out`."""
    roots = [Path(r) for r in roots]
    path = check_output(out, name)
    found = sum(len(character_folders(root)) for root in roots)
    if found < MIN_CHARACTERS:  # before minutes of embedding
        raise AnimefaceError(f"training needs at least {MIN_CHARACTERS} characters (one subfolder of pictures "
                             f"each), found {found} under {', '.join(map(str, roots))}; nothing was embedded")
    embedder = Embedder(backbone, projection=None, recipe=recipe or Recipe())
    views, labels, failed = training_features(embedder, roots, seed, progress)
    for message in failed:
        warnings.warn(f"animeface: skipped {message}", stacklevel=2)
    if len(np.unique(labels)) < MIN_CHARACTERS:
        raise AnimefaceError(f"training needs at least {MIN_CHARACTERS} characters with readable pictures, "
                             f"found {len(np.unique(labels))}")
    figures, calibration = leave_characters_out(views, labels, embedder.recipe, seed)
    projection = fitted_projection(views, labels, embedder.recipe, seed)
    card = {
        "name": name,
        "what": "within-class whitening of the recipe's vectors, trained on anime face crops",
        "backbone_id": embedder.backbone_id,
        "training_data": [{"root": root.name, "characters": len({c for c in set(labels) if c.startswith(f"{i}:")})}
                          for i, root in enumerate(roots)],
        "faces": int(len(labels)), "characters": int(len(np.unique(labels))),
        "views": list(views), "seed": seed, "components": projection.matrix.shape[1], "shrinkage": SHRINKAGE,
        "command": command or "",
        "left_out_characters_top1": figures,
        "pair_similarity": calibration,
        "stranger_bank": {"faces": len(projection.strangers),
                          "characters": int(len(np.unique(projection.stranger_characters))),
                          "what": "projected faces of the training characters, original view",
                          "names": bank_names(labels)},
    }
    return projection.save(path, card)


def losses(top1: dict) -> list[str]:
    """The shots ('5 shots', ...) at which the trained projection named characters left out of its fit
    worse than the untrained recipe did (top1: a card's left_out_characters_top1)."""
    return [k for k, v in top1["untrained"].items()
            if v is not None and top1["trained"].get(k) is not None and top1["trained"][k] < v]


def fitted_projection(views: dict, labels: np.ndarray, recipe: Recipe, seed: int,
                      shrinkage: float = SHRINKAGE) -> Projection:
    """The projection fitted on every view of these faces, carrying the stranger bank drawn from
    them: what `train` saves, and what measuring it fits on the characters not left out."""
    mean, matrix = fit_projection(np.concatenate(list(views.values())), np.concatenate([labels] * len(views)),
                                  shrinkage=shrinkage)
    faces, characters = stranger_bank(views["original"], labels, seed)
    return Projection(mean, matrix, recipe, Projection(mean, matrix, recipe)(faces), characters)


def stranger_bank(vectors: np.ndarray, labels: np.ndarray, seed: int,
                  per_character: int = STRANGERS_PER_CHARACTER) -> tuple[np.ndarray, np.ndarray]:
    """(faces, character numbers): up to per_character faces of each training character, drawn
    at random, which galleries compare faces of characters nobody enrolled with (thresholds.py)."""
    rng = np.random.default_rng(seed)
    characters, index = np.unique(labels, return_inverse=True)
    rows = np.concatenate([rng.permutation(np.flatnonzero(index == c))[:per_character]
                           for c in range(len(characters))])
    return vectors[rows], index[rows].astype(np.int32)


def bank_names(labels: np.ndarray) -> list[str]:
    """The stranger bank's characters' names, by character number, as the card gives them: each
    training folder's name ("0:gura" -> "gura"), cut to the length a card may hold."""
    return [label.partition(":")[2][:MAX_NAME] for label in np.unique(labels)]
