"""Video speed: the real-time factor (seconds of video per second of work) of `animeface video`.

Writes a 720p clip (mp4v, 24 frames a second) in a temporary folder from real face crops of
../shared/data/faces/holoen20, one character per shot, panned, with hard cuts; enrolls those
characters on the real weights; then measures, side by side in one run, the repeats interleaved:
  - decode:       OpenCV reads every frame into a picture, and nothing else;
  - sample R/s:   video.Clip.samples() at R samples a second, nothing else (every frame is
                  decoded, only the sampled ones converted to pictures);
  - video R/s:    video.follow(): sampling, detection, embedding, tracking, naming,
for R = 1, 2 and 4. Model conversion and warm-up are outside the timings. Prints the median
real-time factor of each, by the clock and by this process's CPU time spread over the cores
(what the clock would give on idle cores: on a machine others load, the clock's figure is
lower), and the whole pipeline's share of time spent decoding.

    PYTHONPATH=. python benchmarks/video_speed.py [--seconds 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BACKBONE = str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5")
CHARACTERS = ("irys", "mumei", "bae", "shiori", "ame")
SIZE, FPS = (1280, 720), 24
RATES = (1, 2, 4)


def write_clip(path: Path, seconds: float) -> None:
    """Shots of 5 s, each one character's face crop panned across the frame, its edges filling the rest."""
    import cv2

    w, h = SIZE
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    shot = 5 * FPS
    for i in range(round(seconds * FPS)):
        name = CHARACTERS[i // shot % len(CHARACTERS)]
        face = cv2.imread(str(sorted((SHARED / "faces" / "holoen20" / name).iterdir())[60 + i // shot]))
        side, a = 320, (i % shot) / shot
        x, y = round(60 + (w - side - 120) * a), 200
        small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        out.write(cv2.copyMakeBorder(small, y, h - y - side, x, w - x - side, cv2.BORDER_REPLICATE))
    out.release()


def decode(path: Path) -> None:
    import cv2

    capture = cv2.VideoCapture(str(path))
    while capture.read()[0]:
        pass
    capture.release()


def sample(path: Path, rate: int) -> None:
    from animeface.video import Clip

    for _ in Clip(path).samples(1 / rate):
        pass


def video(rec, path: Path, rate: int) -> int:
    from animeface.video import Clip, follow

    return len(list(follow(rec, Clip(path), 1 / rate)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the clip (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (default 3)")
    args = parser.parse_args()
    os.environ.setdefault("ANIMEFACE_CASCADE", str(SHARED / "cascades" / "lbpcascade_animeface.xml"))
    os.environ.setdefault("ANIMEFACE_DETECTOR", str(SHARED / "models" / "faceboxes" / "FaceBoxes_epoch_90.pth"))
    import numpy as np

    import animeface
    from animeface.io import available_cores

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, args.seconds)
        rec = animeface.Recognizer(Path(tmp) / "gallery", backbone=BACKBONE, progress=False)
        for name in CHARACTERS:
            rec.enroll(name, sorted((SHARED / "faces" / "holoen20" / name).iterdir())[:10], faces="whole")
        rec.detector.detect(np.zeros((64, 64, 3), np.uint8))  # compile outside the timings
        video(rec, clip, 1)
        jobs = {"decode": lambda: decode(clip)}
        for rate in RATES:
            jobs[f"sample {rate}/s"] = lambda rate=rate: sample(clip, rate)
            jobs[f"video {rate}/s"] = lambda rate=rate: video(rec, clip, rate)
        times = {name: [] for name in jobs}
        cpu = {name: [] for name in jobs}
        for _ in range(args.repeats):
            for name, job in jobs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                job()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        tracks = video(rec, clip, 2)
    median = {name: statistics.median(t) for name, t in times.items()}
    cores = available_cores()
    print(f"{args.seconds:g} s of {SIZE[0]}x{SIZE[1]} mp4v video at {FPS} frames/s, {len(CHARACTERS)} shots a "
          f"cycle, {tracks} tracks at 2/s; {cores} cores, load average {os.getloadavg()[0]:.1f} at the end; "
          f"median of {args.repeats}")
    print(f"{'':<12} {'seconds':>8} {'real-time factor':>17} {'CPU seconds':>12} {'by CPU time':>12}")
    for name, seconds in median.items():
        used = statistics.median(cpu[name])
        print(f"{name:<12} {seconds:8.2f} {args.seconds / seconds:16.2f}x {used:12.2f} "
              f"{args.seconds / max(used / cores, 1e-9):11.2f}x")
    for rate in RATES:
        print(f"at {rate}/s: sampling is {median[f'sample {rate}/s'] / median[f'video {rate}/s']:.0%} of the "
              f"pipeline's time; decoding everything alone is {median['decode'] / median[f'video {rate}/s']:.0%}")


if __name__ == "__main__":
    main()
