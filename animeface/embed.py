"""Turn face crops into L2-normalised vectors: pooled mid-level Inception-v3 features and a
colour histogram (the recipe), mapped by a projection trained on anime faces.

The recipe was chosen by measurement on real ImageNet weights (docs/benchmarks.md):
the final ImageNet layers describe objects, the mid-level ones what tells anime
characters apart. The projection (embeddings/, made by `animeface train`) is a
within-class whitening learned from labelled faces: it damps the directions in which
one character's pictures vary (pose, artist, lighting) so that what is left is who it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .backbone import LAYERS, POOLINGS, Network, resolve_backbone
from .errors import ModelError
from .files import parsing, read_npy
from .io import read_file

HUE_BINS, SAT_BINS, GREY_BINS = 16, 4, 8
COLOUR_DIM = HUE_BINS * SAT_BINS + GREY_BINS
CHANNELS = {"mixed0": 256, "mixed1": 288, "mixed2": 288, "mixed3": 768, "mixed4": 768, "mixed5": 768,
            "mixed6": 768, "mixed7": 768, "mixed8": 1280}
INPUT_SIZES = (160, 192, 224, 256, 299)
#: The shipped projection, in the package's embeddings/ folder.
DEFAULT_PROJECTION = "anime-faces-v2"
#: The largest projection file and card read (the largest recipe's square matrix is about 145 MB).
MAX_PROJECTION_BYTES, MAX_CARD_BYTES = 256 << 20, 1 << 20
#: The longest recipe text a projection file may hold.
MAX_RECIPE_TEXT = 4096
#: What a projection file holds, and the most faces its stranger bank may hold.
PROJECTION_ARRAYS = ("mean", "matrix", "recipe", "strangers", "stranger_characters")
MAX_STRANGERS = 20_000
#: The longest name of a bank character a card may give.
MAX_NAME = 200


@dataclass(frozen=True)
class Recipe:
    """What is pooled from the network and how it is put together into one vector."""

    layers: tuple[str, ...] = ("mixed5", "mixed7")
    pooling: str = "avg"
    #: Signed power on pooled features before each layer is L2-normalised (0.5: square root).
    power: float = 0.5
    #: Weight of the unit colour histogram against the unit CNN vector; 0 leaves it out.
    colour_weight: float = 0.1
    input_size: int = 299
    #: Average each face with its mirror image (twice the network time).
    mirror: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers or any(layer not in LAYERS for layer in self.layers):
            raise ValueError(f"layers must be among {', '.join(LAYERS)}, got {self.layers}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not 0 < self.power <= 1:
            raise ValueError(f"power must be in (0, 1], got {self.power}")
        if not 0 <= self.colour_weight <= 10:
            raise ValueError(f"colour_weight must be in [0, 10], got {self.colour_weight}")
        if type(self.input_size) is not int or self.input_size not in INPUT_SIZES:
            raise ValueError(f"input_size must be one of {INPUT_SIZES}, got {self.input_size}")

    @property
    def dim(self) -> int:
        return sum(CHANNELS[layer] for layer in self.layers) + (COLOUR_DIM if self.colour_weight > 0 else 0)

    def to_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, raw: dict) -> "Recipe":
        if not isinstance(raw, dict) or set(raw) - set(cls.__dataclass_fields__):
            raise ValueError(f"not a recipe: {raw!r}")
        return cls(**raw)


@dataclass
class Projection:
    """The trained part: x -> (x - mean) @ matrix, then L2-normalised.

    It carries a bank of strangers: projected faces of its training characters
    (`strangers`, with a character number per row in `stranger_characters`), against which
    a gallery calibrates how a face of a character nobody enrolled scores (thresholds.py).
    """

    mean: np.ndarray
    matrix: np.ndarray
    recipe: Recipe
    strangers: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    stranger_characters: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    card: dict = field(default_factory=dict)
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.card.get("name", "")

    @property
    def stranger_names(self) -> list[str]:
        """The bank's characters' names (their training folders'), by character number, from the
        card; empty for a card that has none."""
        return self.card.get("stranger_bank", {}).get("names", [])

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return _unit((vectors - self.mean) @ self.matrix)

    def save(self, path: Path, card: dict) -> Path:
        """Write `path`.npz and its card `path`.json (atomically, npz first); an existing file of
        either name is a ModelError and nothing is written."""
        from .files import write_bytes

        path = Path(path)
        Projection.check_free(path)
        if len(self.strangers) < 2 or len(np.unique(self.stranger_characters)) < 2:
            raise ValueError("a projection is saved with its stranger bank: faces of at least 2 characters")
        buffer = _npz_bytes(mean=self.mean.astype(np.float32), matrix=self.matrix.astype(np.float32),
                            recipe=np.array(json.dumps(self.recipe.to_dict())),
                            strangers=self.strangers.astype(np.float32),
                            stranger_characters=self.stranger_characters.astype(np.int32))
        write_bytes(path.with_suffix(".npz"), buffer)
        card = {**card, "recipe": self.recipe.to_dict(), "sha256": hashlib.sha256(buffer).hexdigest()}
        write_bytes(path.with_suffix(".json"), (json.dumps(card, indent=1, ensure_ascii=False) + "\n").encode())
        return path.with_suffix(".npz")

    @staticmethod
    def check_free(path: Path) -> None:
        """ModelError if `path`.npz or its card already exists: a projection never replaces a file."""
        for existing in (Path(path).with_suffix(".npz"), Path(path).with_suffix(".json")):
            if os.path.lexists(existing):
                raise ModelError(f"{existing} already exists; choose another name or folder")

    @classmethod
    def load(cls, path: Path) -> "Projection":
        """Read a projection file and its card as a gallery is read: regular files of a bounded size
        only, each array's header checked against the recipe before it is read and its values
        checked after (finite), and any fault one ModelError naming the file. Nothing in them can
        run code."""
        path = Path(path).with_suffix(".npz")
        card_path = path.with_suffix(".json")
        what = "not a usable embedder projection"
        with parsing(card_path, ModelError, what):
            card = json.loads(read_file(card_path, limit=MAX_CARD_BYTES).decode("utf-8"))
            if not isinstance(card, dict):
                raise ValueError("the card is not a JSON object")
        with parsing(path, ModelError, what):
            data = read_file(path, limit=MAX_PROJECTION_BYTES)
            digest = hashlib.sha256(data).hexdigest()
            if card.get("sha256") != digest:
                raise ValueError(f"sha256 {digest} does not match its card's {card.get('sha256')}")
            with zipfile.ZipFile(io.BytesIO(data)) as npz:
                if sorted(npz.namelist()) != sorted(f"{name}.npy" for name in PROJECTION_ARRAYS):
                    raise ValueError(f"the archive must hold exactly {', '.join(PROJECTION_ARRAYS)} (a projection "
                                     "made by an earlier animeface has no stranger bank: train it again)")

                def array(name: str, shape: tuple, dtype: str) -> np.ndarray:
                    with npz.open(f"{name}.npy") as fh:
                        try:
                            return read_npy(fh, shape, np.dtype(dtype))
                        except ValueError as exc:
                            raise ValueError(f"{name}: {exc}") from None

                recipe = Recipe.from_dict(json.loads(str(array("recipe", (), f"<U{MAX_RECIPE_TEXT}"))))
                mean = array("mean", (recipe.dim,), "<f4")
                matrix = array("matrix", (recipe.dim, None), "<f4")
                if not 0 < matrix.shape[1] <= recipe.dim:
                    raise ValueError(f"matrix: {matrix.shape[1]} columns; its recipe allows 1 to {recipe.dim}")
                strangers = array("strangers", (None, matrix.shape[1]), "<f4")
                characters = array("stranger_characters", (len(strangers),), "<i4")
            if not 2 <= len(strangers) <= MAX_STRANGERS or len(np.unique(characters)) < 2:
                raise ValueError(f"strangers: {len(strangers)} faces of {len(np.unique(characters))} characters; "
                                 f"a bank holds 2 to {MAX_STRANGERS} faces of at least 2 characters")
        with parsing(card_path, ModelError, what):
            bank = card.get("stranger_bank", {})
            names = bank.get("names", []) if isinstance(bank, dict) else None
            if not (isinstance(names, list) and all(isinstance(n, str) and len(n) <= MAX_NAME for n in names)
                    and (not names or len(names) == characters.max() + 1)):
                raise ValueError(f"stranger_bank.names must list one name (text of at most {MAX_NAME} characters) per "
                                 "character of the bank")
        return cls(mean, matrix, recipe, strangers, characters, card, digest)


def shipped_projection(name: str = DEFAULT_PROJECTION) -> Path:
    """The path of a projection shipped with the package."""
    from importlib.resources import files

    return Path(str(files("animeface.embeddings") / f"{name}.npz"))


def colour_histogram(crop: np.ndarray, bins: tuple[int, int, int] = (HUE_BINS, SAT_BINS, GREY_BINS)) -> np.ndarray:
    """Hue x saturation histogram of coloured pixels plus a value histogram of grey ones.

    Hair and eye colours are strong cues for who an anime character is (ToonNet's
    "feature inserted network" idea). Square-rooted and L2-normalised.
    """
    import cv2

    hue_bins, sat_bins, grey_bins = bins
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    coloured = (s >= 40) & (v >= 40)
    # the bins of np.histogram2d over hue [0, 180) and saturation [40, 256), by integer arithmetic
    cells = (h[coloured] * hue_bins // 180) * sat_bins + (s[coloured] - 40) * sat_bins // 216
    hs = np.bincount(cells, minlength=hue_bins * sat_bins)
    grey = np.bincount(v[~coloured] * grey_bins // 256, minlength=grey_bins)
    hist = np.sqrt(np.concatenate([hs, grey]).astype(np.float32) / len(h))
    return hist / max(float(np.linalg.norm(hist)), 1e-12)


class Embedder:
    """Batched, L2-normalised face vectors.

    `projection` is "default" (the shipped one, used when it was trained for this
    backbone's weights; otherwise the untrained recipe), a path to a projection made
    by `animeface train`, or None for the untrained `recipe`.
    """

    def __init__(self, backbone=None, projection: str | Path | None = "default", recipe: Recipe | None = None,
                 batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.spec = resolve_backbone(backbone)
        self.batch_size = int(batch_size)
        self.projection: Projection | None = None
        if projection == "default":
            shipped = Projection.load(shipped_projection())
            if recipe is None and self._network_for(shipped.recipe).id == shipped.card.get("backbone_id"):
                self.projection = shipped
        elif projection is not None:
            self.projection = Projection.load(Path(projection))
            if recipe is not None and recipe != self.projection.recipe:
                raise ValueError("a trained projection brings its own recipe; pass recipe=None")
        self.recipe = self.projection.recipe if self.projection else recipe or Recipe()
        self.network = self._network_for(self.recipe)
        self._maps_network: Network | None = None
        if self.projection and self.projection.card.get("backbone_id") != self.backbone_id:
            raise ModelError(f"{self.projection.name or 'the projection'} was trained on backbone "
                             f"{self.projection.card.get('backbone_id')}, not {self.backbone_id}; train one for "
                             "these weights with 'animeface train'")

    def _network_for(self, recipe: Recipe) -> Network:
        return Network(self.spec, recipe.layers, recipe.pooling, recipe.input_size)

    @property
    def input_size(self) -> int:
        return self.recipe.input_size

    @property
    def backbone_id(self) -> str:
        return self.network.id

    @property
    def dim(self) -> int:
        return self.projection.matrix.shape[1] if self.projection else self.recipe.dim

    @property
    def stranger_bank(self) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
        """The projection's stranger bank (faces of its training characters), their character
        numbers and the characters' names; (None, None, []) without a projection."""
        if not self.projection:
            return None, None, []
        return self.projection.strangers, self.projection.stranger_characters, self.projection.stranger_names

    @property
    def pair_similarity(self) -> dict | None:
        """The projection's calibration for grouping faces (train.pair_similarity), if it has one."""
        return self.projection.card.get("pair_similarity") if self.projection else None

    @property
    def description(self) -> dict:
        """Everything besides the backbone that shapes a vector, as recorded in galleries."""
        return {"recipe": self.recipe.to_dict(),
                "projection": self.projection.name if self.projection else None,
                "projection_sha256": self.projection.sha256 if self.projection else None}

    def embed(self, crops) -> np.ndarray:
        """(n, dim) float32 unit vectors for n RGB uint8 crops of input_size x input_size."""
        crops = np.asarray(crops, dtype=np.uint8)
        size = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must have shape (n, {size}, {size}, 3), got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.features(crops)
        if self.recipe.mirror:
            vectors = _unit(vectors + self.features(crops[:, :, ::-1]))
        return (self.projection(vectors) if self.projection else vectors).astype(np.float32)

    def features(self, crops: np.ndarray) -> np.ndarray:
        """The recipe's vectors, before any projection: what `animeface train` learns from."""
        pooled = np.concatenate([self.network(crops[i:i + self.batch_size])
                                 for i in range(0, len(crops), self.batch_size)])
        return combine(pooled, crops, self.recipe)

    def feature_maps(self, crops: np.ndarray) -> list[np.ndarray]:
        """The recipe's layers before pooling, one (n, height, width, channels) array per layer:
        what explain.py attributes a similarity to. The network is converted apart, once."""
        if self._maps_network is None:
            recipe = self.recipe
            self._maps_network = Network(self.spec, recipe.layers, recipe.pooling, recipe.input_size, maps=True)
        batches = [self._maps_network(crops[i:i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]
        return [np.concatenate(layer) for layer in zip(*batches)]


def combine(pooled: np.ndarray, crops: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Per layer: signed power, then L2; layers concatenated and L2-normalised; then the
    weighted colour histogram appended and the whole L2-normalised."""
    parts, start = [], 0
    for layer in recipe.layers:
        block = pooled[:, start:start + CHANNELS[layer]]
        start += CHANNELS[layer]
        parts.append(_unit(np.sign(block) * np.abs(block) ** recipe.power))
    vectors = _unit(np.concatenate(parts, axis=1))
    if recipe.colour_weight > 0:
        colour = np.stack([colour_histogram(c) for c in crops]) * recipe.colour_weight
        vectors = _unit(np.concatenate([vectors, colour], axis=1))
    return vectors.astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _npz_bytes(**arrays) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
