"""What an explanation costs: `Recognizer.explain` per face against embedding the face alone.

Side by side in one run, on the real weights and the shipped projection: a gallery of four
holoen20 characters (six crops each), then for each of N further crops, one at a time, the
median time of `embedder.embed` (the pooled network) and of `explain` with its three best
candidates (the feature-map network, naming, and the hand-written derivatives), and their ratio.

    PYTHONPATH=. python benchmarks/explain_speed.py [--faces 24]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BACKBONE = str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5")
HOLOEN = SHARED / "faces" / "holoen20"
CHARACTERS = ("gura", "calli", "kiara", "fauna")


def main() -> None:
    import animeface

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=24)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        rec = animeface.Recognizer(Path(tmp) / "g", backbone=BACKBONE, progress=False)
        for name in CHARACTERS:
            rec.enroll(name, sorted((HOLOEN / name).iterdir())[:6], faces="whole")
        paths = [p for name in CHARACTERS for p in sorted((HOLOEN / name).iterdir())[60:60 + args.faces // 4]]
        faces = [rec.face_crops(animeface.load_image(p), "whole")[1][0] for p in paths]
        rec.explain(faces[0], faces="whole", top=args.top)  # both networks loaded before timing
        rec.embedder.embed(faces[0][None])
        embed, explain = [], []
        for face in faces:  # interleaved, so both see the same load
            start = time.perf_counter()
            rec.embedder.embed(face[None])
            embed.append(time.perf_counter() - start)
            start = time.perf_counter()
            rec.explain(face, faces="whole", top=args.top)
            explain.append(time.perf_counter() - start)
    e, x = float(np.median(embed)), float(np.median(explain))
    print(f"{len(faces)} faces, one at a time, {args.top} candidates explained each")
    print(f"embed one face:   median {e * 1000:.0f} ms")
    print(f"explain one face: median {x * 1000:.0f} ms ({x / e:.2f}x embedding it)")


if __name__ == "__main__":
    main()
