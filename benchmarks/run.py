"""Every speed figure of animeface in one run, each a median beside a reference measured in the same run.

    PYTHONPATH=. python benchmarks/run.py [--quick] [--markdown FILE]

Sections: embedding throughput (OpenVINO vs the same network in TensorFlow, a plain
Keras call and the previous whole-Inception embedder, and a ceiling from this machine's
matmul speed), start-up of `animeface identify` (vs importing TensorFlow), detection by
picture size (vs the plain cascade), identify per illustration (vs its detect + embed
floor), enrolling 10 pictures into galleries of 10 to 1,000 characters (vs embedding them
alone), FAISS search (vs exact search) and `import animeface` (vs `import numpy`). The
backbone is the real ImageNet weights in ../shared/data/models. --quick runs a small version.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
#: The real ImageNet weights, through the same loading path as a user's downloaded file.
BACKBONE = str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5")


def median_seconds(fn, runs: int) -> float:
    """Median wall time of fn() over runs calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def face_crops(count: int, size: int = 299) -> np.ndarray:
    from animeface.crop import whole_image
    from animeface.io import load_image

    files = sorted((SHARED / "faces" / "holoen20").glob("*/*"))[::40][:count]
    return np.stack([whole_image(load_image(f), size) for f in files])


def matmul_gflops(runs: int) -> float:
    """float32 GFLOP/s of numpy matmul: the best median over square sizes 1024 to 4096."""
    best = 0.0
    for n in (1024, 2048, 4096):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        a @ a
        best = max(best, 2 * n ** 3 / median_seconds(lambda: a @ a, runs) / 1e9)
    return best


def conv_macs(model) -> float:
    """Multiply-accumulates per image of a Keras model's convolutions (the bulk of Inception-v3)."""
    total = 0
    for layer in model.layers:
        if layer.__class__.__name__ == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            total += h * w * kh * kw * c_in * c_out
    return float(total)


def bench_embedding(quick: bool) -> Iterator[str]:
    """The embedder's network run by OpenVINO (what animeface runs) beside the same network as a
    TensorFlow tf.function, a plain Keras call of it, and the previous embedder (the whole
    Inception-v3 to mixed10 as a tf.function), on the same crops in one run."""
    import keras
    import tensorflow as tf

    from animeface.backbone import _keras_network, parse_spec
    from animeface.embed import Embedder

    runs = 3 if quick else 7
    gflops = matmul_gflops(runs)
    embedder = Embedder(BACKBONE)
    network = embedder.network
    pooled_tf, _ = _keras_network(parse_spec(BACKBONE), network.layers, network.pooling, network.size)
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(299, 299, 3))
    trunk = keras.Model(base.input, base.get_layer(network.deepest).output)
    macs = conv_macs(trunk)
    whole = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg", input_shape=(299, 299, 3))

    @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.uint8)])
    def previous(batch):
        return whole(tf.cast(batch, tf.float32) / 127.5 - 1.0, training=False)

    from animeface.backbone import Network

    f32 = Network(BACKBONE, network.layers, network.pooling, network.size, precision="f32")
    ceiling = gflops * 1e9 / (2 * macs)
    crops = face_crops(32)
    yield from [f"numpy float32 matmul: {gflops:.1f} GFLOP/s; Inception-v3 to {network.deepest}: "
                f"{macs / 1e9:.2f} GMAC per 299 px image -> float32 ceiling {ceiling:.1f} images/s", "",
                "| batch | OpenVINO, as shipped (bf16 where the CPU has it) img/s | OpenVINO float32 img/s "
                "| whole Embedder.embed img/s | same network, TF tf.function img/s "
                "| same network, plain Keras call img/s | previous embedder (to mixed10, TF) img/s "
                "| shipped / TF | float32 OpenVINO share of ceiling |",
                "|---|---|---|---|---|---|---|---|---|"]
    for batch in (1, 8, 32):
        x = crops[:batch]
        plain = tf.constant(x.astype(np.float32) / 127.5 - 1.0)
        for warm in (lambda: network(x), lambda: f32(x), lambda: embedder.embed(x), lambda: pooled_tf(x),
                     lambda: trunk(plain, training=False), lambda: previous(x)):
            warm()
        ov = batch / median_seconds(lambda: network(x), runs)
        ov32 = batch / median_seconds(lambda: f32(x), runs)
        full = batch / median_seconds(lambda: embedder.embed(x), runs)
        tff = batch / median_seconds(lambda: pooled_tf(x), runs)
        keras_call = batch / median_seconds(lambda: trunk(plain, training=False), runs)
        old = batch / median_seconds(lambda: previous(x), runs)
        yield (f"| {batch} | {ov:.1f} | {ov32:.1f} | {full:.1f} | {tff:.1f} | {keras_call:.1f} | {old:.1f} "
               f"| {ov / tff:.2f} | {ov32 / ceiling:.0%} |")


def bench_startup(quick: bool, tmp: Path) -> Iterator[str]:
    """`animeface identify` on one face crop in a fresh process, the network cache warm, beside
    `python -c "import tensorflow"`, alternated in one run."""
    rec = small_recognizer(tmp / "startup")
    rec.save()
    crop = sorted((SHARED / "faces" / "holoen20" / "gura").iterdir())[50]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANIMEFACE_BACKBONE": BACKBONE, "ANIMEFACE_CASCADE": str(CASCADE)}
    identify = [sys.executable, "-m", "animeface.cli", "identify", str(crop), "--gallery", str(rec.path), "-q"]
    subprocess.run(identify, env=env, check=True, capture_output=True)
    ours, tf_import = [], []
    for _ in range(2 if quick else 5):
        ours.append(median_seconds(lambda: subprocess.run(identify, env=env, check=True, capture_output=True), 1))
        tf_import.append(median_seconds(lambda: subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                                                               check=True, capture_output=True), 1))
    a, b = statistics.median(ours), statistics.median(tf_import)
    yield from ["| command | wall s (median) |", "|---|---|",
                f"| animeface identify CROP (warm cache) | {a:.2f} |", f"| python -c 'import tensorflow' | {b:.2f} |",
                "", f"ratio: {a / b:.2f}"]


def bench_detection(quick: bool) -> Iterator[str]:
    from animeface.detect import Detector
    from animeface.io import load_image

    runs = 3 if quick else 7
    detector = Detector("cascade", cascade=CASCADE)
    plain = cv2.CascadeClassifier(str(CASCADE))
    rgb = load_image(SHARED / "illustrations" / "set_a" / "detect_01.jpg")
    yield "| long side px | animeface detect ms | plain cascade ms (1.1, 5, 24 px) | faces found (ours / plain) |"
    yield "|---|---|---|---|"
    for side in ((320, 1280) if quick else (320, 640, 1280, 2560)):
        scale = side / max(rgb.shape[:2])
        img = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))

        def run_plain():
            return plain.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))

        ours = median_seconds(lambda: detector.detect(img), runs) * 1000
        ref = median_seconds(run_plain, runs) * 1000
        yield f"| {side} | {ours:.1f} | {ref:.1f} | {len(detector.detect(img))} / {len(run_plain())} |"


def small_recognizer(path: Path, characters: int = 2, shots: int = 5):
    from animeface import Recognizer

    rec = Recognizer(path, backbone=BACKBONE, cascade=CASCADE, progress=False)
    for name in sorted(p.name for p in (SHARED / "faces" / "holoen20").iterdir())[:characters]:
        rec.enroll(name, sorted((SHARED / "faces" / "holoen20" / name).iterdir())[:shots], faces="whole")
    return rec


def bench_identify(quick: bool, tmp: Path) -> Iterator[str]:
    from animeface.crop import crop_face
    from animeface.io import iter_image_files, load_image

    rec = small_recognizer(tmp / "identify")
    files = iter_image_files([SHARED / "illustrations"])
    files = files[:2] if quick else files
    runs = 1 if quick else 3
    images = [load_image(f) for f in files]
    rec.identify(images[0])
    ours, floor, faces = [], [], 0

    def detect_and_embed(img):
        boxes = rec.detector.detect(img)
        if boxes:
            rec.embedder.embed(np.stack([crop_face(img, b, 299, rec.margin) for b in boxes]))

    for f in files:
        ours.append(median_seconds(lambda: rec.identify(f), runs))
        floor.append(median_seconds(lambda: detect_and_embed(load_image(f)), runs))
        faces += len(rec.identify(f))
    yield from ["| pictures | faces | identify ms per picture (median) | detect + embed alone ms | ratio |",
            "|---|---|---|---|---|",
            f"| {len(files)} | {faces} | {1000 * statistics.median(ours):.0f} | "
            f"{1000 * statistics.median(floor):.0f} | {statistics.median(ours) / statistics.median(floor):.2f} |"]


def bench_enroll(quick: bool, tmp: Path) -> Iterator[str]:
    from animeface import Recognizer

    rng = np.random.default_rng(0)
    new = sorted((SHARED / "faces" / "moeimouto10" / "000_hatsune_miku").iterdir())[:10]
    yield "| characters in gallery (5 synthetic vectors each) | enroll 10 pictures s (median) | " \
          "embed the 10 alone s | ratio |"
    yield "|---|---|---|---|"
    for count in ((10,) if quick else (10, 100, 1000)):
        rec = Recognizer(tmp / f"enroll{count}", backbone=BACKBONE, cascade=CASCADE, progress=False)
        vectors = unit_centres((count + 1) * 5, rec.embedder.dim, rng)
        rec.gallery.add(vectors, [{"label": f"synthetic{i // 5:04d}", "source": "synthetic", "sha256": f"{i:064x}"}
                                  for i in range(len(vectors))])
        rec.forget("synthetic0000")  # refits head and thresholds through the public API: count - 1 left
        runs = 1 if quick or count >= 1000 else 3
        names = iter(f"new{i}" for i in range(runs))
        took = median_seconds(lambda: rec.enroll(next(names), new, faces="whole"), runs)
        crops = face_crops(10)
        embed = median_seconds(lambda: rec.embedder.embed(crops), runs)
        yield f"| {count} | {took:.2f} | {embed:.2f} | {took / embed:.1f} |"


def unit_centres(count: int, dim: int, rng) -> np.ndarray:
    c = rng.standard_normal((count, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def around(centres: np.ndarray, n: int, rng, spread: float = 0.5) -> np.ndarray:
    """n unit vectors scattered around random centres, like faces around their character."""
    dim = centres.shape[1]
    x = centres[rng.integers(0, len(centres), n)]
    x += rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bench_faiss(quick: bool) -> Iterator[str]:
    import faiss

    rng = np.random.default_rng(0)
    sizes = [(1_000, 768), (10_000, 768)] if quick else [(10_000, 768), (100_000, 768), (1_000_000, 64)]
    n_queries = 50 if quick else 200
    yield "| vectors | dim | index | build s | ms per query (median, 1 at a time) | recall@1 vs exact |"
    yield "|---|---|---|---|---|---|"
    for n, dim in sizes:
        centres = unit_centres(n // 20, dim, rng)  # 20 vectors per "character"
        x, q = around(centres, n, rng), around(centres, n_queries, rng)
        nlist = max(16, int(np.sqrt(n)))
        indexes = {
            "exact (flat)": lambda: faiss.IndexFlatIP(dim),
            "HNSW M=32 ef=128": lambda: _hnsw(faiss, dim),
            f"IVF nlist={nlist} nprobe=16": lambda: _ivf(faiss, dim, nlist, x, rng),
        }
        truth = None
        for name, make in indexes.items():
            start = time.perf_counter()
            index = make()
            index.add(x)
            build = time.perf_counter() - start
            found = index.search(q, 1)[1][:, 0]
            times = []
            for row in q:
                t = time.perf_counter()
                index.search(row[None], 1)
                times.append(time.perf_counter() - t)
            if truth is None:
                truth = found
            yield (f"| {n:,} | {dim} | {name} | {build:.1f} | {1000 * statistics.median(times):.2f} | "
                   f"{np.mean(found == truth):.3f} |")


def _hnsw(faiss, dim):
    index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 128
    return index


def _ivf(faiss, dim, nlist, x, rng):
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x[rng.choice(len(x), min(len(x), 40 * nlist), replace=False)])
    index.nprobe = 16
    return index


def bench_import(quick: bool) -> Iterator[str]:
    runs = 3 if quick else 7
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = "import animeface, sys; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout

    def run(code):
        return lambda: subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)

    ours = median_seconds(run("import animeface"), runs)
    bare = median_seconds(run("pass"), runs)
    numpy = median_seconds(run("import numpy"), runs)
    loaded = out.split()
    yield from ["| python -c ... | wall ms (median) |", "|---|---|",
            f"| pass (bare interpreter) | {1000 * bare:.0f} |", f"| import numpy | {1000 * numpy:.0f} |",
            f"| import animeface | {1000 * ours:.0f} |", "",
            f"tensorflow in sys.modules after `import animeface`: {loaded[0]}; keras: {loaded[1]}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few runs: under two minutes")
    parser.add_argument("--markdown", metavar="FILE", help="also write the results as Markdown here")
    parser.add_argument("--only", nargs="+", choices=["import", "embed", "startup", "detect", "identify", "enroll", "faiss"],
                        help="run only these sections")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import tempfile

    header = [f"Machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, "
              f"Python {platform.python_version()}, "
              f"{'quick' if args.quick else 'full'} run, {time.strftime('%Y-%m-%d')}."]
    out = ["\n".join(header)]
    with tempfile.TemporaryDirectory() as tmp:
        sections = {"import": ("`import animeface`", lambda: bench_import(args.quick)),
                    "embed": ("Embedding throughput", lambda: bench_embedding(args.quick)),
                    "startup": ("Start-up of `animeface identify`", lambda: bench_startup(args.quick, Path(tmp))),
                    "detect": ("Detection per picture", lambda: bench_detection(args.quick)),
                    "identify": ("identify per illustration", lambda: bench_identify(args.quick, Path(tmp))),
                    "enroll": ("Enroll 10 pictures", lambda: bench_enroll(args.quick, Path(tmp))),
                    "faiss": ("FAISS search", lambda: bench_faiss(args.quick))}
        sections = [sections[k] for k in (args.only or sections)]
        print(header[0], flush=True)
        for title, run in sections:
            start = time.perf_counter()
            print(f"\n## {title}\n", flush=True)
            rows = []
            for row in run():  # rows print as they are measured
                print(row, flush=True)
                rows.append(row)
            took = f"({time.perf_counter() - start:.0f} s)"
            print("\n" + took, flush=True)
            out.append(f"## {title}\n\n" + "\n".join(rows) + "\n\n" + took)
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
