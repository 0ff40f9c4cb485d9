"""Seconds to refit the softmax head and calibrate the naming rule, as every enroll and forget does.

Synthetic galleries of 20, 100 and 1,000 characters with 10 unit vectors each, of the
shipped embedder's size (768 dims), calibrated against the shipped stranger bank. Median of a few runs.

    PYTHONPATH=. python benchmarks/head_speed.py [--sizes 100 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from animeface.embed import Projection, shipped_projection
from animeface.head import SoftmaxHead
from animeface.thresholds import calibrate


def refit_seconds(vectors, labels, bank, repeats) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        head = SoftmaxHead().fit(vectors, labels)
        calibrate(vectors, labels, head, bank)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    bank = Projection.load(shipped_projection()).strangers
    for size in args.sizes:
        vectors = rng.normal(size=(10 * size, 768)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        labels = [str(i // 10) for i in range(10 * size)]
        print(f"synthetic, {size} characters x 10: {refit_seconds(vectors, labels, bank, args.repeats):.2f} s", flush=True)


if __name__ == "__main__":
    main()
