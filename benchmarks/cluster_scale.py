"""How grouping faces (animeface.cluster.group) grows with the number of vectors: time and memory.

Each size runs in a fresh process, so its peak memory is its own. The vectors are made
to look like the shipped embedder's after centring: characters of about 30 faces whose
pairs score about 0.09, the calibration's same-character mean, and 10% strangers. They
measure cost, not accuracy (that is benchmarks/cluster_quality.py, on real faces).

    python benchmarks/cluster_scale.py                      # 1,000 / 10,000 / 100,000 vectors
    python benchmarks/cluster_scale.py --sizes 1000 10000 --repeats 3
    python benchmarks/cluster_scale.py --ivf 40000   # why the neighbour search is exact
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

DIM = 768
FACES_PER_CHARACTER = 30
SAME_PAIR_SIMILARITY = 0.09


def vectors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    characters = max(1, int(0.9 * n) // FACES_PER_CHARACTER)
    truth = np.concatenate([rng.integers(0, characters, int(0.9 * n)), np.full(n - int(0.9 * n), -1)])
    centres = rng.normal(size=(characters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weight = np.sqrt(SAME_PAIR_SIMILARITY / (1 - SAME_PAIR_SIMILARITY))
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 10_000):  # a chunk at a time, so making them does not set the memory peak
        rows = slice(start, min(n, start + 10_000))
        part = rng.normal(size=(rows.stop - start, DIM)).astype(np.float32) / np.sqrt(DIM)
        part += weight * np.where(truth[rows, None] >= 0, centres[truth[rows].clip(0)], 0)
        out[rows] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out, truth


def measure(n: int) -> dict:
    """One size, in this process: seconds, peak memory above the vectors themselves, and the groups."""
    from sklearn.metrics import adjusted_rand_score

    from animeface.cluster import group

    data, truth = vectors(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    labels = group(data, threshold=SAME_PAIR_SIMILARITY / 2)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grouped = labels >= 0
    return {"n": n, "seconds": seconds, "extra_peak_mb": (peak - before) / 1024, "vectors_mb": data.nbytes / 2 ** 20,
            "groups": int(labels.max()) + 1, "grouped": float(grouped.mean()),
            "ari_on_grouped": float(adjusted_rand_score(truth[grouped], labels[grouped])) if grouped.any() else 0.0}


def ivf_against_exact(n: int) -> None:
    """Time and recall of an inverted-file index (4 sqrt(n) lists, 16 probed) against the exact
    search grouping uses, for each face's 30 nearest."""
    import faiss

    from animeface.cluster import NEIGHBOURS, Centred

    unit = Centred(vectors(n)[0]).for_search
    start = time.perf_counter()
    exact = faiss.IndexFlatIP(DIM)
    exact.add(unit)
    truth = exact.search(unit, NEIGHBOURS + 1)[1]
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    lists = int(4 * np.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, lists, faiss.METRIC_INNER_PRODUCT)
    ivf.train(unit[np.random.default_rng(0).choice(n, min(n, 50 * lists), replace=False)])
    ivf.add(unit)
    ivf.nprobe = 16
    found = ivf.search(unit, NEIGHBOURS + 1)[1]
    ivf_s = time.perf_counter() - start
    recall = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(truth.tolist(), found.tolist())])
    print(f"{n} vectors: exact {exact_s:.1f} s, IVF {ivf_s:.1f} s ({exact_s / ivf_s:.1f}x faster), "
          f"IVF recall of the {NEIGHBOURS} nearest {recall:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the median is printed")
    parser.add_argument("--ivf", type=int, metavar="N", help="compare an inverted-file index with the exact search")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ivf:
        ivf_against_exact(args.ivf)
        return
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    print(f"{'vectors':>8} {'median s':>9} {'per 1k':>7} {'extra peak MB':>14} {'vectors MB':>11} {'groups':>7} "
          f"{'grouped':>8} {'ARI':>5}")
    previous = None
    for n in args.sizes:
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--one", str(n)], check=True,
                                          capture_output=True, text=True).stdout) for _ in range(args.repeats)]
        seconds = float(np.median([r["seconds"] for r in runs]))
        r = runs[0]
        growth = f"  x{seconds / previous:.1f} time for x{n / args.sizes[args.sizes.index(n) - 1]:.0f} vectors" \
            if previous else ""
        print(f"{n:>8} {seconds:>9.2f} {1000 * seconds / n:>7.3f} {np.median([x['extra_peak_mb'] for x in runs]):>14.0f} "
              f"{r['vectors_mb']:>11.0f} {r['groups']:>7} {r['grouped']:>8.2f} {r['ari_on_grouped']:>5.2f}{growth}",
              flush=True)
        previous = seconds


if __name__ == "__main__":
    main()
