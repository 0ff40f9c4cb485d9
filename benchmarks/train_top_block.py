"""Train Inception-v3's top block (`mixed7`) on characters with a metric loss; measure it on characters left out.

    PYTHONPATH=. python benchmarks/train_top_block.py [--folds 0 1] [--epochs 1] [--lr 1e-5] [--episodes 10]

Issue 20's "the network itself transfer-learned". The `mixed6` maps of every face of holoen20,
moeimouto10 and extra8, as itself and mirrored, are computed once by TensorFlow and cached
(ANIMEFACE_CACHE/top_block, about 3.4 GB in float16; a stopped run goes on where it stopped). For
each fold of open_set.py, `mixed7` starts from the ImageNet weights, its batch norm frozen, and is
trained on the fold's other characters with a cosine-softmax loss (CosFace) on its pooled,
square-rooted vector; a checkpoint after each epoch lets a stopped run go on (the optimiser's moments
start again). Each face's `mixed7` part of the recipe vector is then replaced by the trained block's,
the projection and its stranger bank are fitted on the fold's training characters as `animeface
train` fits them, and 6 left-out characters enrolled + 2 strangers are named as open_set.py names
them, untrained against trained, on the same episodes. Only the original and mirrored views are
used, for both. TensorFlow uses a GPU where it finds one; on 2 CPU cores an epoch takes about 2
minutes. Measured 2026-12-07 (docs/benchmarks.md): every setting tried made left-out characters worse.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
from open_set import ROOTS, WEIGHTS, draw, episode_after, fold_space  # noqa: E402

from animeface import models  # noqa: E402
from animeface.crop import whole_image  # noqa: E402
from animeface.embed import CHANNELS, Embedder, Recipe  # noqa: E402
from animeface.files import write_bytes  # noqa: E402
from animeface.io import load_image  # noqa: E402
from animeface.recognizer import Recognizer  # noqa: E402
from animeface.train import FOLDS, SHRINKAGE, training_features, training_files  # noqa: E402

VIEWS = ("original", "mirror")
MAP_SHAPE = (17, 17, 768)
BATCH = 32


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def networks():
    """(trunk to mixed6, the mixed7 block alone), with the ImageNet weights."""
    import keras

    from animeface.backbone import _load_weights

    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(299, 299, 3))
    _load_weights(base, WEIGHTS)
    return (keras.Model(base.input, base.get_layer("mixed6").output),
            keras.Model(base.get_layer("mixed6").output, base.get_layer("mixed7").output))


def cached_maps(files: list[Path], folder: Path, trunk) -> dict[str, np.ndarray]:
    """Each view's (n, 17, 17, 768) float16 mixed6 maps, computed where the cache does not hold them yet."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    progress = folder / "progress.json"
    key = [str(WEIGHTS), [str(f) for f in files]]
    done = json.loads(progress.read_text()) if progress.is_file() else {}
    start = done.get("rows", 0) if done.get("key") == key else 0
    mode = "r+" if start else "w+"
    maps = {v: np.lib.format.open_memmap(folder / f"mixed6_{v}.npy", mode, np.float16, (len(files),) + MAP_SHAPE)
            for v in VIEWS}
    run = tf.function(lambda batch: trunk(tf.cast(batch, tf.float32) / 127.5 - 1.0, training=False))
    for first in range(start, len(files), BATCH):
        crops = np.stack([whole_image(load_image(f), 299) for f in files[first:first + BATCH]])
        for view, batch in zip(VIEWS, (crops, crops[:, :, ::-1])):
            maps[view][first:first + len(crops)] = run(np.ascontiguousarray(batch)).numpy()
        for m in maps.values():
            m.flush()
        write_bytes(progress, json.dumps({"key": key, "rows": first + len(crops)}).encode(), replace=True)
        print(f"mixed6 maps: {first + len(crops)}/{len(files)}", flush=True)
    return {v: np.load(folder / f"mixed6_{v}.npy", mmap_mode="r") for v in VIEWS}


def pooled(block, maps) -> np.ndarray:
    """Average-pooled mixed7 of every face, through the block."""
    import tensorflow as tf

    run = tf.function(lambda x: tf.reduce_mean(block(x, training=False), axis=[1, 2]))
    return np.concatenate([run(np.asarray(maps[i:i + 64], np.float32)).numpy() for i in range(0, len(maps), 64)])


def train_block(block, maps, imagenet_mixed7, labels, rows, args, checkpoints: Path):
    """Train block (in place) on the faces of `rows` for args.epochs, from the last epoch checkpointed
    under checkpoints (a name prefix) up to that, if any. imagenet_mixed7: every face's pooled mixed7
    before training (original view), which the head's class directions start from."""
    import keras
    import tensorflow as tf

    classes, y = np.unique(labels[rows], return_inverse=True)
    start = unit(np.sqrt(np.maximum(imagenet_mixed7[rows], 0)))
    head = tf.Variable(np.stack([unit(start[y == c].mean(0, keepdims=True))[0] for c in range(len(classes))], 1))

    def checkpoint(epoch: int) -> Path:
        return checkpoints.with_name(f"{checkpoints.name}-epoch{epoch}.npz")

    first_epoch = max((e for e in range(1, args.epochs + 1) if checkpoint(e).is_file()), default=0)
    if first_epoch:
        with np.load(checkpoint(first_epoch), allow_pickle=False) as saved:
            block.set_weights([saved[f"w{i}"] for i in range(len(block.weights))])
            head.assign(saved["head"])
    optimiser = keras.optimizers.Adam(args.lr)
    variables = block.trainable_weights + [head]

    @tf.function
    def step(x, target):
        with tf.GradientTape() as tape:
            vector = tf.math.l2_normalize(tf.sqrt(tf.reduce_mean(block(x, training=False), axis=[1, 2]) + 1e-6), axis=1)
            cos = vector @ tf.math.l2_normalize(head, axis=0) - args.margin * tf.one_hot(target, len(classes))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(target, args.scale * cos))
        optimiser.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for epoch in range(first_epoch, args.epochs):
        order = np.random.default_rng([args.seed, epoch]).permutation(len(rows) * len(VIEWS))
        losses = []
        for first in range(0, len(order) - BATCH + 1, BATCH):
            picked = order[first:first + BATCH]
            x = np.stack([maps[VIEWS[i // len(rows)]][rows[i % len(rows)]] for i in picked]).astype(np.float32)
            losses.append(float(step(x, y[picked % len(rows)].astype(np.int32))))
        print(f"  epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.3f}", flush=True)
        arrays = {f"w{i}": w.numpy() for i, w in enumerate(block.weights)}
        buffer = io.BytesIO()
        np.savez(buffer, head=head.numpy(), **arrays)
        write_bytes(checkpoint(epoch + 1), buffer.getvalue(), replace=True)


def with_mixed7(features: np.ndarray, mixed7: np.ndarray) -> np.ndarray:
    """Recipe vectors with their mixed7 part replaced (the recipe's power, at the part's own length)."""
    start = CHANNELS["mixed5"]
    part = slice(start, start + CHANNELS["mixed7"])
    out = features.copy()
    out[:, part] = unit(np.sqrt(np.maximum(mixed7, 0))) * np.linalg.norm(features[:, part], axis=1, keepdims=True)
    return out


def open_set_figures(views, labels, left_out, fold, args) -> dict[int, np.ndarray]:
    """Mean (known named right, strangers called unknown, AUROC, calibration error) per shots."""
    fit = ~np.isin(labels, left_out)
    vectors, projection = fold_space(views, labels, fit, Recipe(), SHRINKAGE)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recognizer(Path(tmp) / "g", backbone=str(WEIGHTS), projection=None, progress=False)
        rec.embedder.projection = projection
        for shots in args.shots:
            rows = [episode_after(rec, vectors, labels, *draw(labels, left_out, shots, 6,
                                                              np.random.default_rng([e, shots, fold])))
                    for e in range(args.episodes)]
            out[shots] = np.nanmean(np.array(rows, float), axis=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)), choices=range(FOLDS),
                        help="which of open_set.py's folds of left-out characters to run (default: all 5)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of training per fold (default: 1)")
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam's learning rate (default: 1e-5)")
    parser.add_argument("--margin", type=float, default=0.2, help="CosFace margin (default: 0.2)")
    parser.add_argument("--scale", type=float, default=16.0, help="CosFace scale (default: 16)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per fold and shots (default: 10)")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10], help="pictures enrolled per character")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order faces are trained in")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    features, labels, _ = training_features(Embedder(str(WEIGHTS), projection=None, recipe=Recipe()), ROOTS,
                                            seed=0, progress=True)
    files, file_labels = training_files(ROOTS)
    if file_labels != list(labels):
        raise SystemExit("some faces could not be read: the cached maps would not line up with the features")
    folder = models.cache_dir() / "top_block"
    trunk, block = networks()
    maps = cached_maps(files, folder, trunk)
    imagenet = block.get_weights()
    imagenet_mixed7 = {v: pooled(block, maps[v]) for v in VIEWS}
    untrained = {v: with_mixed7(features[v], imagenet_mixed7[v]) for v in VIEWS}
    order = np.random.default_rng(0).permutation(np.unique(labels))
    setting = f"lr{args.lr:g}-m{args.margin:g}-s{args.scale:g}-seed{args.seed}"
    print("\n| fold | shots | untrained: known / strangers / AUROC / ECE | trained |\n|---|---|---|---|")
    for fold in args.folds:
        left_out = order[fold::FOLDS]
        block.set_weights(imagenet)
        training_rows = np.flatnonzero(~np.isin(labels, left_out))
        train_block(block, maps, imagenet_mixed7["original"], labels, training_rows, args,
                    folder / f"fold{fold}-{setting}")
        trained = {v: with_mixed7(features[v], pooled(block, maps[v])) for v in VIEWS}
        before = open_set_figures(untrained, labels, left_out, fold, args)
        after = open_set_figures(trained, labels, left_out, fold, args)
        for shots in args.shots:
            cells = [" / ".join(f"{x:.3f}" for x in r[shots]) for r in (before, after)]
            print(f"| {fold} | {shots} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
