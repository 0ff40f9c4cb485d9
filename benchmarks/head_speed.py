"""Seconds to refit the softmax head and calibrate the thresholds, as every enroll and forget does.

Galleries: faces/holoen20 with 20 crops per character (cached vectors, see
embed_cache.py), and synthetic galleries of 100 and 1,000 characters with 10
unit vectors each (2,120 dims, as random-init:0 plus colour). Median of a few runs.

    PYTHONPATH=. python benchmarks/head_speed.py [--sizes 100 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import cnn_vectors  # noqa: E402

from animeface.head import SoftmaxHead  # noqa: E402
from animeface.thresholds import calibrate  # noqa: E402


def refit_seconds(vectors, labels, repeats) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        head = SoftmaxHead().fit(vectors, labels)
        try:
            calibrate(vectors, labels, head)
        except TypeError:  # the older calibrate(vectors, labels), for before/after runs
            calibrate(vectors, labels)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cnn, y, _, _ = cnn_vectors("holoen20")
    rows = np.concatenate([np.flatnonzero(y == c)[:20] for c in np.unique(y)])
    print(f"holoen20, 20 characters x 20: {refit_seconds(cnn[rows], [str(c) for c in y[rows]], args.repeats):.2f} s",
          flush=True)
    rng = np.random.default_rng(0)
    for size in args.sizes:
        vectors = rng.normal(size=(10 * size, 2120)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        labels = [str(i // 10) for i in range(10 * size)]
        print(f"synthetic, {size} characters x 10: {refit_seconds(vectors, labels, args.repeats):.2f} s", flush=True)


if __name__ == "__main__":
    main()
