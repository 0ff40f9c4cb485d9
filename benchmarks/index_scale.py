"""Indexing speed: `animeface index` (Ray Data) on 1 and 2 CPUs, against `animeface sort`'s pipeline on
the same pictures, with the peak memory of each worker.

The folder is sort_speed.py's (one in five a full illustration, the rest face crops, two per cent
unreadable), named against the same four-character gallery, with the real backbone and FaceBoxes.
Each method runs in a fresh process pinned to its CPUs (sched_setaffinity, which the workers Ray
starts inherit; Ray is told the same count), side by side in one run:
  - sort:    sort_folder() (decode and detect in threads, embed in batches), networks warmed up
             outside the timing, as in sort_speed.py;
  - index:   index_pictures() with Ray started on this machine: "whole" is the call from start to
             end (Ray's start, the workers loading their networks, the last part written);
             "steady" is the rate between the first and the last part file written, what a long
             run of millions of pictures settles at.
Peak memory: the driver's ru_maxrss, and while index runs, each Ray worker's resident memory
sampled every 0.2 s (/proc), the largest per kind of worker.

    PYTHONPATH=. python benchmarks/index_scale.py [--count 500] [--repeats 1] [--part 25]
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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sort_speed import BACKBONE, CASCADE, CHARACTERS, ROOT, SHARED, build_folder  # noqa: E402

DETECTOR = SHARED / "models" / "faceboxes" / "FaceBoxes_epoch_90.pth"


def _workers(pid: int) -> dict[int, tuple[str, int]]:
    """Each Ray worker process on this machine below pid: (its title, resident KiB)."""
    parents, found = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                continue
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            todo.append(child)
            try:
                title = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                rss = next(int(line.split()[1]) for line in Path(f"/proc/{child}/status").read_text().splitlines()
                           if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                continue
            found[child] = (title, rss)
    return found


def _kind(title: str) -> str:
    if "EmbedFaces" in title:
        return "embedder actor"
    if "detect_batch" in title:
        return "detection task"
    return "other Ray process" if title.startswith("ray::") else "Ray's own processes"


def measure(method: str, folder: Path, repeats: int, part: int) -> dict:
    """Run in a child process: time one method ("sort" or "index") `repeats` times."""
    import numpy as np

    import animeface
    from animeface.index import index_pictures
    from animeface.sort import sort_folder

    cpus = len(os.sched_getaffinity(0))
    gallery = folder.parent / "gallery"
    whole, steady, peaks = [], [], {}
    if method == "sort":
        rec = animeface.Recognizer(gallery, backbone=BACKBONE, cascade=CASCADE, progress=False)
        rec.detector.detect(np.zeros((64, 64, 3), np.uint8))
        rec.embedder.embed(np.zeros((rec.embedder.batch_size, 299, 299, 3), np.uint8))
    for r in range(repeats):
        out = folder.parent / f"out-{method}-{cpus}-{r}"
        start = time.perf_counter()
        if method == "sort":
            sort_folder(rec, folder, out, jobs=cpus)
            whole.append(pictures(folder) / (time.perf_counter() - start))
            continue
        samples: dict[int, tuple[str, int]] = {}
        done = threading.Event()

        def sample():
            while not done.wait(0.2):
                for pid, (title, rss) in _workers(os.getpid()).items():
                    kind = _kind(title)
                    if kind != "other Ray process" or pid not in samples:
                        samples[pid] = (kind, max(rss, samples.get(pid, ("", 0))[1]))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        index_pictures([folder], out, gallery=gallery, backbone=BACKBONE, cascade=str(CASCADE), num_cpus=cpus,
                       part_pictures=part)
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
        whole.append(pictures(folder) / elapsed)
        times = sorted(p.stat().st_mtime for p in out.iterdir())
        steady.append((len(times) - 1) * part / (times[-1] - times[0]) if len(times) > 1 else float("nan"))
        for kind, rss in samples.values():
            peaks[kind] = max(peaks.get(kind, 0), rss / 1024)
        shutil.rmtree(out)
    return {"method": method, "cpus": cpus, "whole": whole, "steady": steady, "peaks_mib": peaks,
            "driver_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def pictures(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--part", type=int, default=25, help="pictures per part file (index)")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2], help="CPU counts to measure (default 1 2)")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "CPUS", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, cpus, folder = args.child
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:int(cpus)])
        print(json.dumps(measure(method, Path(folder), args.repeats, args.part)))
        return

    import animeface

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="animeface-index-bench-") as tmp:
        folder = Path(tmp) / "pictures"
        build_folder(folder, args.count)
        rec = animeface.Recognizer(Path(tmp) / "gallery", backbone=BACKBONE, cascade=CASCADE, progress=False)
        for name in CHARACTERS:
            rec.enroll(name, sorted((SHARED / "faces" / "holoen20" / name).iterdir())[:6], faces="whole")
        rec.save()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_USAGE_STATS_ENABLED": "0",
               "ANIMEFACE_DETECTOR": str(DETECTOR), "ANIMEFACE_CASCADE": str(CASCADE)}
        env.pop("RAY_ADDRESS", None)
        results = []
        for cpus in sorted({min(c, cores) for c in args.cpus}):
            for method in ("sort", "index"):
                out = subprocess.run([sys.executable, __file__, "--child", method, str(cpus), str(folder),
                                      "--repeats", str(args.repeats), "--part", str(args.part)],
                                     env=env, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{method} on {cpus} CPU(s) failed:\n{out.stderr[-3000:]}")
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.count} mixed pictures, {args.repeats} repeat(s), backbone {BACKBONE}, FaceBoxes; "
          f"{os.cpu_count()} CPU(s) here, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'method':<8}{'CPUs':>5}{'whole img/s':>13}{'steady img/s':>14}{'driver MiB':>12}  peak MiB per worker")
    by = {}
    for r in results:
        w, s = statistics.median(r["whole"]), statistics.median(r["steady"]) if r["steady"] else float("nan")
        by[r["method"], r["cpus"]] = (w, s)
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["peaks_mib"].items()))
        print(f"{r['method']:<8}{r['cpus']:>5}{w:>13.2f}{s if r['steady'] else float('nan'):>14.2f}"
              f"{r['driver_mib']:>12.0f}  {peaks or '-'}")
    for cpus in sorted({c for _, c in by}):
        (sort_rate, _), (whole, steady) = by["sort", cpus], by["index", cpus]
        print(f"index / sort on {cpus} CPU(s): whole {whole / sort_rate:.2f}, steady {steady / sort_rate:.2f}")
    if ("index", 1) in by and ("index", 2) in by:
        print(f"index 2 CPUs / 1 CPU (steady): {by['index', 2][1] / by['index', 1][1]:.2f}x")
        per_core = by["index", 2][1] / 2
        print(f"10 million pictures at the steady rate per core here ({per_core:.2f} img/s): "
              f"{1e7 / per_core / 3600:,.0f} core-hours")


if __name__ == "__main__":
    main()
