"""Sorting speed: `animeface sort`'s pipeline against a naive loop calling identify() per picture.

Builds a folder of mixed pictures in a temporary directory (illustrations from
../shared/data/illustrations, face crops from faces/holoen20 and faces/unlabeled64,
a few unreadable files), enrolls four characters, then measures, side by side in
one run, each method in its own fresh process (so that peak memory, ru_maxrss,
is its own):
  - naive: for each file, Recognizer.identify(path), one picture at a time;
  - sort:  sort_folder(): decode and detect in a thread pool (Recognizer.face_crops)
           while the main thread embeds in batches and names (Recognizer.name_faces).
TensorFlow start-up and one warm-up batch are outside the timings. Prints the
median images/second over the repeats, the ratio and the peak memory.

With --detectors, the folder holds full illustrations only (../shared/data/illustrations,
repeated), and sort runs once with each face detector (faceboxes, cascade), side by side.

With --rerun, one process sorts the folder once, then sorts it again into the same
destination `repeats` times (nothing new: each picture is placed again from the journal),
and prints the first run's time, the median re-run's and their ratio.

    PYTHONPATH=. python benchmarks/sort_speed.py [--count 500] [--repeats 3] [--jobs N] [--detectors | --rerun]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
BACKBONE = str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5")
CHARACTERS = ("gura", "calli", "kiara", "fauna")


def build_folder(folder: Path, count: int, illustrations_only: bool = False) -> None:
    """count files: one in five an illustration, the rest face crops, two per cent unreadable;
    or, illustrations_only, every one a full illustration."""
    illustrations = sorted(p for p in (SHARED / "illustrations").rglob("*") if p.is_file())
    if illustrations_only:
        folder.mkdir(parents=True)
        for i in range(count):
            source = illustrations[i % len(illustrations)]
            shutil.copyfile(source, folder / f"{i:04d}_{source.name}")
        return
    holo = sorted(p for c in sorted((SHARED / "faces" / "holoen20").iterdir()) for p in sorted(c.iterdir())[60:80])
    small = sorted((SHARED / "faces" / "unlabeled64").iterdir())
    for i in range(count):
        sub = folder / f"batch{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 50 == 49:
            (sub / f"{i:04d}_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
            continue
        source = illustrations[i // 5 % len(illustrations)] if i % 5 == 0 else \
            holo[i * 7 % len(holo)] if i % 5 in (1, 2, 3) else small[i * 11 % len(small)]
        shutil.copyfile(source, sub / f"{i:04d}_{source.name}")


def measure(method: str, folder: Path, repeats: int, jobs: int) -> dict:
    """Run in a child process: time one method ("naive", "sort" or "sort:DETECTOR") over the folder
    `repeats` times."""
    import numpy as np

    import animeface
    from animeface.sort import sort_folder

    gallery = folder.parent / "gallery"
    detector = method.partition(":")[2] or "faceboxes"
    rec = animeface.Recognizer(gallery, backbone=BACKBONE, cascade=CASCADE, detector=detector, progress=False)
    rec.detector.detect(np.zeros((64, 64, 3), np.uint8))  # compile the detector outside the timing
    rec.embedder.embed(np.zeros((rec.embedder.batch_size, 299, 299, 3), np.uint8))  # warm up TensorFlow
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rates = []
    if method == "rerun":  # the first run, then re-runs into the same folder: seconds each
        for r in range(repeats + 1):
            start = time.perf_counter()
            sort_folder(rec, folder, folder.parent / "sorted-0", jobs=jobs)
            rates.append(time.perf_counter() - start)
        return {"method": method, "seconds": rates}
    for r in range(repeats):
        start = time.perf_counter()
        if method.startswith("sort"):
            sort_folder(rec, folder, folder.parent / f"sorted-{r}", jobs=jobs)
        else:
            for path in files:
                try:
                    rec.identify(path)
                except animeface.ImageError:
                    pass
        rates.append(len(files) / (time.perf_counter() - start))
    return {"method": method, "rates": rates, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--detectors", action="store_true", help="full illustrations; sort with each detector")
    parser.add_argument("--rerun", action="store_true", help="a first sort against re-runs into the same folder")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]), args.repeats, args.jobs)))
        return

    import animeface

    with tempfile.TemporaryDirectory(prefix="animeface-sort-bench-") as tmp:
        folder = Path(tmp) / "pictures"
        build_folder(folder, args.count, illustrations_only=args.detectors)
        rec = animeface.Recognizer(Path(tmp) / "gallery", backbone=BACKBONE, cascade=CASCADE, progress=False)
        for name in CHARACTERS:
            rec.enroll(name, sorted((SHARED / "faces" / "holoen20" / name).iterdir())[:6], faces="whole")
        rec.save()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        results = []
        methods = ("sort:faceboxes", "sort:cascade") if args.detectors else ("rerun",) if args.rerun else ("naive", "sort")
        for method in methods:
            out = subprocess.run([sys.executable, __file__, "--child", method, str(folder), "--repeats",
                                  str(args.repeats), "--jobs", str(args.jobs)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            for sorted_dir in Path(tmp).glob("sorted-*"):
                shutil.rmtree(sorted_dir)
    print(f"{args.count} {'full illustrations' if args.detectors else 'mixed pictures'}, {args.repeats} repeat(s), backbone {BACKBONE}, "
          f"{os.cpu_count()} CPU(s), sort --jobs {args.jobs}")
    if args.rerun:
        first, *again = results[0]["seconds"]
        print(f"first run {first:.2f} s; re-runs {' '.join(f'{x:.2f}' for x in again)} s, median "
              f"{statistics.median(again):.2f} s; re-run / first: {statistics.median(again) / first:.3f}")
        return
    print(f"{'method':<16}{'median img/s':>14}{'runs':>26}{'peak RSS MiB':>15}")
    for r in results:
        runs = " ".join(f"{x:.2f}" for x in r["rates"])
        print(f"{r['method']:<16}{statistics.median(r['rates']):>14.2f}{runs:>26}{r['maxrss_mib']:>15.0f}")
    first, second = (statistics.median(r["rates"]) for r in results)
    print(f"{results[1]['method']} / {results[0]['method']}: {second / first:.2f}x")


if __name__ == "__main__":
    main()
