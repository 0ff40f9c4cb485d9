"""Why a face got a name: a map of how much each part of the face added to its similarity with a candidate.

The similarity explained is the one the gallery ranks characters by: the cosine of the face's
vector with the candidate's enrolled mean (gallery centroids). It is attributed by gradient x
activation on the embedder's own feature maps (the recipe's layers, mixed5 and mixed7), with the
derivatives of every later step written out here and run on the maps the inference runtime gives,
so no TensorFlow runs: pooling, the signed square root, the per-layer and whole-vector L2
normalisations, the colour histogram and the projection.

The one approximation: each normalisation's norm is taken as a constant of this face, as
explanations of similarity models do (Stylianou et al. 2019, "Visualizing deep similarity
networks"). The similarity is scale-free in the maps (every layer is L2-normalised), so the full
gradient is orthogonal to them and gradient x activation through the norms sums to exactly zero,
whatever the face; with the norms held, it sums to what each region adds. The signed power p**a gives back
a times its value under gradient x activation (Euler), so the maps are divided by a. Then, exactly:

    heat.sum() + colour + offset == similarity

where `colour` is the colour histogram's term and `offset` the projection's mean's (a constant of
the candidate, divided by the length of the face's projected vector). Each layer's map is laid on
the finest layer's grid, sharing each coarse cell among the fine cells it covers, which keeps its
sum.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .backbone import GEM_POWER
from .embed import Embedder, colour_histogram, combine
from .errors import AnimefaceError, ModelError

#: Share of the face blanked by the deletion check.
DELETED_SHARE = 0.2
#: How the deletion check blanks a cell: its pixels set to mid-grey (the network's zero input) or
#: blurred (colours kept, detail gone), or its features zeroed in the maps, the pixels left as they
#: are (what the map is a first-order account of).
FILLS = ("grey", "blur", "features")
SHEET_FILE = "index.html"


@dataclass
class Explanation:
    """How much each part of one face added to its similarity with one candidate."""

    #: Which face of the picture (0: the first found), and where it is.
    face: int
    box: object
    #: The face's name as identify gives it (None: unknown), and the candidate explained.
    label: str | None
    candidate: str
    #: The candidate's probability, as `identify` gives it.
    probability: float
    #: Cosine similarity of the face's vector with the candidate's enrolled mean.
    similarity: float
    #: (rows, columns) over the face crop as the embedder saw it, top to bottom, left to right:
    #: each cell's share of the similarity (negative where it pulled away from the candidate).
    heat: np.ndarray
    #: The colour histogram's term of the similarity, and the projection mean's.
    colour: float
    offset: float
    #: The face crop the embedder saw (input_size square, RGB).
    crop: np.ndarray

    @property
    def colour_share(self) -> float:
        """The colour histogram's part of what the face adds, from -1 to 1: colour / (|colour| + |heat.sum()|);
        negative when the colours pulled away from the candidate."""
        total = abs(self.colour) + abs(float(self.heat.sum()))
        return self.colour / total if total > 1e-12 else 0.0

    @property
    def where(self) -> str:
        """The face's place for people: its box, or that the whole picture was taken as the face."""
        from .recognizer import WholePicture

        return "whole picture" if isinstance(self.box, WholePicture) else f"at {tuple(self.box)}"

    @property
    def hottest(self) -> str:
        """Where on the face the map is highest, in words ("upper left", "middle", ...)."""
        row, col = np.unravel_index(int(np.argmax(self.heat)), self.heat.shape)
        vertical = ("upper", "middle", "lower")[min(2, 3 * row // self.heat.shape[0])]
        horizontal = ("left", "centre", "right")[min(2, 3 * col // self.heat.shape[1])]
        return "middle" if (vertical, horizontal) == ("middle", "centre") else f"{vertical} {horizontal}"

    def to_dict(self, decimals: int = 4) -> dict:
        return {"face": self.face, "box": list(self.box), "label": self.label, "candidate": self.candidate,
                "probability": round(self.probability, 4), "similarity": round(self.similarity, 4),
                "colour_share": round(self.colour_share, 4),
                "colour": round(self.colour, 4), "offset": round(self.offset, 4),
                "heat": np.round(self.heat, decimals).tolist()}


def vectors_and_maps(embedder: Embedder, crops: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The crops' vectors and the feature maps they are pooled from, in one network run: the vectors
    are pooled here, as the embedder's network pools them, so they are those the maps explain."""
    recipe = embedder.recipe
    if recipe.mirror:
        raise ModelError("explain does not handle a recipe that averages each face with its mirror image")
    crops = np.asarray(crops, np.uint8)
    maps = embedder.feature_maps(crops)
    recipe_vectors = combine(np.concatenate([pool(m, recipe.pooling) for m in maps], axis=1), crops, recipe)
    vectors = embedder.projection(recipe_vectors) if embedder.projection else recipe_vectors
    return vectors.astype(np.float32), maps


def pool(maps: np.ndarray, pooling: str) -> np.ndarray:
    """(n, channels) pooled from (n, height, width, channels) maps, as backbone.Network pools them."""
    if pooling == "avg":
        return maps.mean(axis=(1, 2))
    if pooling == "max":
        return maps.max(axis=(1, 2))
    return np.mean(np.maximum(maps, 1e-6) ** GEM_POWER, axis=(1, 2)) ** (1 / GEM_POWER)


def pooling_shares(maps: np.ndarray, pooling: str) -> np.ndarray:
    """(height, width, channels): each position's share of its channel's pooled value, the pooling's
    gradient x activation divided by the pooled value (pooling is of degree 1, so they sum to 1)."""
    if pooling == "max":
        flat = maps.reshape(-1, maps.shape[-1])
        shares = np.zeros_like(flat)
        shares[flat.argmax(axis=0), np.arange(flat.shape[1])] = 1.0
        return shares.reshape(maps.shape)
    weights = maps if pooling == "avg" else np.maximum(maps, 1e-6) ** GEM_POWER
    total = weights.sum(axis=(0, 1))
    return weights / np.where(total > 0, total, 1.0)


def attribute(maps: list[np.ndarray], crop: np.ndarray, embedder: Embedder, targets: np.ndarray):
    """One face's maps (one (height, width, channels) array per layer) -> per target: the heat on the
    finest grid, the similarity, the colour term and the offset (module docstring)."""
    recipe = embedder.recipe
    maps = [np.asarray(m, np.float64) for m in maps]
    # forward, keeping each norm: z = signed power of the pooled maps, x the recipe's unit vector
    z = [np.sign(p) * np.abs(p) ** recipe.power for p in (pool(m[None], recipe.pooling)[0] for m in maps)]
    layer_norms = [max(np.linalg.norm(zl), 1e-12) for zl in z]
    joined = np.concatenate([zl / nl for zl, nl in zip(z, layer_norms)])
    cnn_norm = max(np.linalg.norm(joined), 1e-12)
    colour = colour_histogram(crop).astype(np.float64) * recipe.colour_weight if recipe.colour_weight > 0 \
        else np.zeros(0)
    whole_norm = max(np.linalg.norm(np.concatenate([joined / cnn_norm, colour])), 1e-12)
    x = np.concatenate([joined / cnn_norm, colour]) / whole_norm
    targets = np.asarray(targets, np.float64)
    if embedder.projection:
        mean, matrix = embedder.projection.mean.astype(np.float64), embedder.projection.matrix.astype(np.float64)
        projected = (x - mean) @ matrix
    else:
        mean, matrix, projected = np.zeros_like(x), None, x
    projected_norm = max(np.linalg.norm(projected), 1e-12)
    # the gradient of the similarity in x, norms held: g = matrix @ target / |projected|
    g = (targets @ matrix.T if matrix is not None else targets).T / projected_norm  # (dim, T)
    similarity = targets @ projected / projected_norm
    offset = -mean @ g
    cnn_dim = len(joined)
    colour_term = colour / whole_norm @ g[cnn_dim:]
    heat, start = 0.0, 0
    fine = max(maps, key=lambda m: m.shape[0] * m.shape[1]).shape[:2]
    for m, zl, nl in zip(maps, z, layer_norms):
        channels = m.shape[-1]
        # each channel's term of the similarity, spread over positions by the pooling's shares
        channel_terms = (zl / (nl * cnn_norm * whole_norm))[:, None] * g[start:start + channels]  # (C, T)
        start += channels
        layer_heat = np.einsum("hwc,ct->thw", pooling_shares(m, recipe.pooling), channel_terms)
        rows, cols = spread(fine[0], m.shape[0]), spread(fine[1], m.shape[1])
        heat = heat + np.einsum("ih,thw,jw->tij", rows, layer_heat, cols)
    return heat.astype(np.float32), similarity, colour_term, offset


def spread(fine: int, coarse: int) -> np.ndarray:
    """(fine, coarse): how a coarse grid's cells along one side share out among a finer grid's over
    the same span, by overlap; each column sums to 1, so a map keeps its sum."""
    edges_f, edges_c = np.linspace(0, 1, fine + 1), np.linspace(0, 1, coarse + 1)
    overlap = np.minimum(edges_f[1:, None], edges_c[None, 1:]) - np.maximum(edges_f[:-1, None], edges_c[None, :-1])
    return np.maximum(overlap, 0) * coarse


def cell_bounds(cells: int, side: int) -> np.ndarray:
    """The pixel edges of `cells` grid cells along a side of `side` pixels."""
    return np.round(np.linspace(0, side, cells + 1)).astype(int)


def blanked(crop: np.ndarray, cells: np.ndarray, fill: str = "grey") -> np.ndarray:
    """The crop with the pixels of the chosen cells ((rows, cols) boolean grid) blanked with `fill`."""
    import cv2

    if fill not in ("grey", "blur"):
        raise ValueError(f"fill must be grey or blur, got {fill!r}")
    source = np.full_like(crop, 128) if fill == "grey" else cv2.GaussianBlur(crop, (0, 0), crop.shape[0] / 30)
    out = crop.copy()
    rows, cols = cell_bounds(cells.shape[0], crop.shape[0]), cell_bounds(cells.shape[1], crop.shape[1])
    for r, c in zip(*np.nonzero(cells)):
        out[rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = source[rows[r]:rows[r + 1], cols[c]:cols[c + 1]]
    return out


def deletion_drops(embedder: Embedder, explanation: Explanation, target: np.ndarray, rng: np.random.Generator,
                   share: float = DELETED_SHARE, fill: str = "grey") -> dict[str, float]:
    """How much blanking the hottest, a random and the coldest `share` of the face's cells lowers its
    similarity with the target (as explained: from the same network): a faithful map makes the first
    the largest. "moved" blanks the hottest cells' shape at a random place (shifted, wrapping round),
    so that it breaks the face into as few pieces as the hottest cells do."""
    heat = explanation.heat
    count = max(1, int(round(share * heat.size)))
    order = np.argsort(heat, axis=None, kind="stable")
    masks = {}
    for name, cells in {"hottest": order[-count:], "random": rng.choice(heat.size, count, replace=False),
                        "coldest": order[:count]}.items():
        masks[name] = np.zeros(heat.size, bool)
        masks[name][cells] = True
        masks[name] = masks[name].reshape(heat.shape)
    masks["moved"] = np.roll(masks["hottest"], (rng.integers(1, heat.shape[0]), rng.integers(1, heat.shape[1])), (0, 1))
    if fill == "features":
        _, maps = vectors_and_maps(embedder, explanation.crop[None])
        start = explanation.similarity
        after = [attribute([m[0] * kept(mask, m.shape[1:3])[..., None] for m in maps], explanation.crop, embedder,
                           np.asarray(target)[None])[1][0] for mask in masks.values()]
    else:
        crops = [explanation.crop] + [blanked(explanation.crop, mask, fill) for mask in masks.values()]
        start, *after = vectors_and_maps(embedder, np.stack(crops))[0] @ np.asarray(target, np.float32)
    return {name: float(start - s) for name, s in zip(masks, after)}


def kept(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The share of each cell of a grid of `shape` left when the cells of `mask` (the finest grid) go."""
    rows, cols = spread(mask.shape[0], shape[0]), spread(mask.shape[1], shape[1])
    return 1.0 - rows.T @ mask.astype(np.float64) @ cols


def heat_scale(heats) -> float:
    """The heat an overlay shows at full strength, one for maps compared side by side: the 95th
    percentile of their magnitudes (scaled to the largest, a few strong cells left the rest of the
    face almost bare)."""
    return max(float(np.percentile(np.abs(np.stack(heats)), 95)), 1e-12)


def overlay(crop: np.ndarray, heat: np.ndarray, scale: float | None = None) -> np.ndarray:
    """The crop with the heat laid over it: red where a region added to the similarity, blue where
    it took away, stronger the more; `scale` is the heat shown at full strength (default:
    heat_scale of this map)."""
    import cv2

    side = crop.shape[0]
    scale = scale or heat_scale([heat])
    level = np.clip(cv2.resize(heat.astype(np.float32) / scale, (side, side), interpolation=cv2.INTER_CUBIC), -1, 1)
    colour = np.where(level[..., None] >= 0, np.array([255, 40, 0], np.float32), np.array([0, 90, 255], np.float32))
    alpha = 0.65 * np.abs(level)[..., None]
    grey = crop.astype(np.float32).mean(axis=2, keepdims=True) * 0.5 + crop * 0.5
    return np.clip(grey * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def check_free(folder: Path) -> None:
    """AnimefaceError if folder is not a folder or already holds a contact sheet: one is never replaced."""
    if os.path.lexists(folder) and not Path(folder).is_dir():
        raise AnimefaceError(f"{folder} exists and is not a folder: choose a new folder for --out")
    if os.path.lexists(Path(folder) / SHEET_FILE):
        raise AnimefaceError(f"{Path(folder) / SHEET_FILE} already exists: choose a new folder for --out")


def contact_sheet(sections: list[tuple[str, list]]) -> str:
    """A page of the faces explained: per picture, per face, the crop and each candidate's map, with the
    similarity, probability and colour share under it. sections: (picture, [(item, crop file, map file)])."""
    def figure(src: str, caption: str, title: str = "") -> str:
        return (f'<figure><img src="{html.escape(quote(src), quote=True)}" alt="{html.escape(caption, quote=True)}" '
                f'title="{html.escape(title, quote=True)}"><figcaption>{html.escape(caption)}</figcaption></figure>')

    parts = []
    for picture, written in sections:
        faces = {}
        for item, crop, heat in written:
            faces.setdefault(item.face, []).append((item, crop, heat))
        rows = []
        for face in faces.values():
            first = face[0][0]
            named = f"named {first.label}" if first.label else "unknown"
            tiles = [figure(face[0][1], f"face {first.where}: {named}")]
            tiles += [figure(heat, f"{item.candidate}: similarity {item.similarity:.3f}, probability "
                                   f"{item.probability:.2f}, colour {item.colour_share:.0%}",
                             f"hottest {item.hottest}") for item, _, heat in face]
            rows.append(f'<div class="face">{"".join(tiles)}</div>')
        parts.append(f"<section><h2>{html.escape(picture)}</h2>{''.join(rows) or '<p>no face</p>'}</section>")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            "content=\"width=device-width, initial-scale=1\"><title>animeface: why these names</title><style>"
            "body{font-family:sans-serif;margin:1em;background:#fafafa}h2{margin:.2em 0;font-size:1.1em}"
            "section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.8em 0}"
            ".face{display:flex;flex-wrap:wrap;gap:8px;margin:.4em 0}figure{margin:0;width:200px}"
            "img{width:200px;height:200px;border-radius:4px}figcaption{font-size:12px;color:#333}"
            "</style></head><body><h1>Which parts of each face its candidates matched</h1>"
            "<p>Red: the region added to the similarity with that candidate's enrolled faces; blue: it took away. "
            "The maps of one face share one scale. The colour share is the colour histogram's part of the "
            "similarity, beside the map.</p>" + "".join(parts) + "</body></html>\n")
