"""Load on `animeface serve`: many identify requests from concurrent clients, with a few enrolls among them.

Enrolls four characters (eight face crops each, ../shared/data/faces/holoen20) into a
temporary gallery unless --gallery names one, starts `animeface serve` on a free port
as a user would, then sends --requests identify requests (illustrations and face crops
from ../shared/data, in turn) from --clients threads, while one more client enrolls
--enrolls faces with the page's token. Prints the median and 95th percentile latency,
the throughput, whether every request succeeded, and whether the gallery opens after
with the counts the server reported.

    ANIMEFACE_BACKBONE=../shared/data/models/inception_v3_imagenet_to_mixed8.weights.h5 \\
        PYTHONPATH=. python benchmarks/serve_load.py [--requests 200] [--clients 8] [--enrolls 10]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HOLOEN = SHARED / "faces" / "holoen20"
CHARACTERS = ("gura", "calli", "kiara", "fauna")


def pictures() -> list[Path]:
    """The illustrations of set_a (one to six faces each) and sixteen face crops."""
    scenes = sorted((SHARED / "illustrations" / "set_a").iterdir())
    return scenes + [sorted((HOLOEN / c).iterdir())[50 + i] for i in range(4) for c in CHARACTERS]


def start_server(gallery: Path) -> tuple[subprocess.Popen, str, str]:
    """`animeface serve --port 0`; returns the process, its address and its token."""
    process = subprocess.Popen([sys.executable, "-m", "animeface", "serve", "--port", "0", "--gallery", str(gallery),
                                "-q"], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    address = re.search(r"at (http://\S+/) ", process.stdout.readline()).group(1)
    token = process.stdout.readline().rsplit(" ", 1)[1].strip()
    return process, address, token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=Path, help="an existing gallery (default: a temporary one of four characters)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--enrolls", type=int, default=10, help="faces enrolled during the load (default 10)")
    args = parser.parse_args()

    from animeface import Recognizer

    with tempfile.TemporaryDirectory() as tmp:
        gallery = args.gallery or Path(tmp) / "gallery"
        if not args.gallery:
            rec = Recognizer(gallery, progress=False)
            for name in CHARACTERS:
                rec.enroll(name, sorted((HOLOEN / name).iterdir())[:8], faces="whole")
            rec.save()
        process, address, token = start_server(gallery)
        try:
            files = [(p.name, p.read_bytes()) for p in pictures()]
            client = httpx.Client(base_url=address, timeout=300)

            def identify(i: int) -> tuple[float, int]:
                start = time.perf_counter()
                status = client.post("/api/identify", files={"picture": files[i % len(files)]}).status_code
                return time.perf_counter() - start, status

            def enroll_some() -> list[int]:
                faces = sorted((HOLOEN / "gura").iterdir())[100:100 + args.enrolls]
                return [client.post("/api/enroll", files={"picture": (p.name, p.read_bytes())}, data={"name": "gura"},
                                    headers={"x-animeface-token": token}).status_code for p in faces]

            client.post("/api/identify", files={"picture": files[0]})  # warm-up: the first inference request
            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients + 1) as pool:
                enrolls = pool.submit(enroll_some)
                results = list(pool.map(identify, range(args.requests)))
            elapsed = time.perf_counter() - start
            served = client.get("/api/characters").json()["characters"]
        finally:
            process.terminate()
            process.wait(timeout=60)
        latencies = sorted(t for t, _ in results)
        ok = sum(status == 200 for _, status in results)
        reopened = Recognizer.open(gallery, progress=False).characters
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"backbone: {os.environ.get('ANIMEFACE_BACKBONE', 'imagenet')}")
    print(f"{args.requests} identify requests from {args.clients} clients ({len(files)} pictures in turn), "
          f"{args.enrolls} enrolls among them")
    print(f"identify: {ok}/{len(results)} succeeded; latency median {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms; {len(results) / elapsed:.1f} requests/s")
    print(f"enroll: {enrolls.result().count(200)}/{args.enrolls} succeeded")
    same = reopened == {c["name"]: c["count"] for c in served}
    print(f"gallery after: opens with {reopened}; {'the same as' if same else 'NOT the same as'} the server said")
    return 0 if ok == len(results) and same and enrolls.result().count(200) == args.enrolls else 1


if __name__ == "__main__":
    sys.exit(main())
