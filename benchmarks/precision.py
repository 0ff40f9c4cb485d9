"""Does bf16 inference keep the embedder's accuracy? Speed and dev-set top-1, float32 against bf16.

    PYTHONPATH=. python benchmarks/precision.py [--backbone PATH]

The cached OpenVINO network is compiled twice, with INFERENCE_PRECISION_HINT f32 (what
animeface runs) and bf16. Every crop of ../shared/data/faces/holoen20 and moeimouto10
is embedded by both (the shipped recipe and projection), and each set is scored by the
ridge head at 20 shots over 3 random splits (closed-set top-1). Speed: median seconds
for a batch of 16, both compiled models alternated in one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from animeface.crop import whole_image
from animeface.embed import Embedder, combine
from animeface.evaluate import character_folders
from animeface.head import SoftmaxHead
from animeface.io import load_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5"


def top1(vectors, labels, shots=20, repeats=3) -> float:
    scores = []
    for seed in range(repeats):
        rng = np.random.default_rng(seed)
        enrolled, tested = [], []
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            enrolled += list(rows[:shots])
            tested += list(rows[shots:])
        head = SoftmaxHead().fit(vectors[enrolled], list(labels[enrolled]))
        scores.append(np.mean(np.array(head.classes)[head.predict_proba(vectors[tested]).argmax(1)] == labels[tested]))
    return float(np.mean(scores))


def main():
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=str(WEIGHTS))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    embedder = Embedder(args.backbone)
    network = embedder.network
    network(np.zeros((1, 299, 299, 3), np.uint8))  # converted and cached
    xml = network._folder(network._file()) / "network.xml"
    core = ov.Core()
    compiled = {p: core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": p}) for p in ("f32", "bf16")}
    print("| set | float32 top-1 | bf16 top-1 | difference (points) |")
    print("|---|---|---|---|")
    batch = None
    for name in ("holoen20", "moeimouto10"):
        files, labels = [], []
        for character, paths in character_folders(SHARED / "faces" / name).items():
            files += paths
            labels += [character] * len(paths)
        labels = np.array(labels)
        crops = np.stack([whole_image(load_image(f), 299) for f in files])
        batch = crops[:16] if batch is None else batch
        vectors = {}
        for precision, model in compiled.items():
            pooled = np.concatenate([model.create_infer_request().infer({0: crops[i:i + 16]})[0]
                                     for i in range(0, len(crops), 16)])
            vectors[precision] = embedder.projection(combine(pooled, crops, embedder.recipe))
        a, b = top1(vectors["f32"], labels), top1(vectors["bf16"], labels)
        print(f"| {name} | {a:.1%} | {b:.1%} | {100 * (b - a):+.1f} |", flush=True)
    times = {p: [] for p in compiled}
    for _ in range(7):
        for precision, model in compiled.items():
            request = model.create_infer_request()
            start = time.perf_counter()
            request.infer({0: batch})
            times[precision].append(time.perf_counter() - start)
    f32, bf16 = (statistics.median(times[p]) for p in ("f32", "bf16"))
    print(f"\nbatch of 16: float32 {16 / f32:.1f} img/s, bf16 {16 / bf16:.1f} img/s ({f32 / bf16:.2f}x)")


if __name__ == "__main__":
    main()
