"""Recognition figures on the development sets, each set embedded once and scored at several shots.

    PYTHONPATH=. python benchmarks/dev_sets.py [--backbone PATH] [--shots 5 10 20 30]

The backbone defaults to the real ImageNet weights in ../shared/data/models.

The same code as `animeface evaluate ROOT --faces whole --seed 0` (evaluate.score_splits), so
the figures match the command line; only the embedding is shared between rows. Also runs the
"20 characters, 20 shots, no strangers" case, which measures how many known faces come back unknown.
"""

import argparse
import tempfile
import time
from pathlib import Path

from animeface.evaluate import character_folders, embed_pictures, score_splits
from animeface.recognizer import Recognizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"holoen20": 5, "moeimouto10": 2}  # set -> characters held out as strangers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=str(SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5"))
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| set | shots | strangers | n_test | top-1 [95% CI] | closed-set top-1 | known answered unknown "
          "| macro-F1 | strangers rejected | AUROC | calibrated sim / prob |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, strangers in SETS.items():
        folders = character_folders(SHARED / "faces" / name)
        with tempfile.TemporaryDirectory() as tmp:
            rec = Recognizer(Path(tmp) / "g", backbone=args.backbone, cascade=SHARED / "cascades" /
                             "lbpcascade_animeface.xml", progress=False)
            started = time.perf_counter()
            pictures = embed_pictures(rec, folders, "whole")
            embed_s = time.perf_counter() - started
            cases = [(k, strangers) for k in args.shots] + [(20, 0)]
            for shots, unknown in cases:
                r = score_splits(rec, folders, pictures, shots, unknown, args.repeats, 0, 1000,
                                 {"root": name, "faces": "whole"})
                known = [x for x in r["records"] if x["truth"] is not None]
                unknown_share = sum(x["answer"] is None for x in known) / len(known)
                t = r["thresholds"]
                print(f"| {name} | {shots} | {unknown} | {r['n_test']} | {r['top1']:.1%} "
                      f"[{r['top1_ci'][0]:.1%}, {r['top1_ci'][1]:.1%}] | {r['top1_closed_set']:.1%} | "
                      f"{unknown_share:.1%} | {r['macro_f1']:.3f} | "
                      f"{'-' if r['unknown_rejected'] is None else format(r['unknown_rejected'], '.1%')} | "
                      f"{'-' if r['auroc_unknown'] is None else format(r['auroc_unknown'], '.3f')} | "
                      f"{t['similarity']:.3f} / {t['probability']:.3f} |", flush=True)
        print(f"({name}: {len(pictures)} pictures embedded once in {embed_s:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
