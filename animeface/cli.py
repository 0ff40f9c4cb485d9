"""The `animeface` command line: enroll, identify, detect, list, forget (and sort, evaluate).

Heavy modules load inside each command, so `animeface --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import AnimefaceError


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints, escaped, rather than crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except AnimefaceError as exc:
        print(f"animeface: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the disk said no (full, read-only, permission): a message, not a traceback
        print(f"animeface: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("animeface: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="animeface",
        description="Find anime faces in pictures and name the characters you enrolled.",
        epilog="Environment: ANIMEFACE_HOME (default gallery), ANIMEFACE_BACKBONE, ANIMEFACE_CASCADE, "
               "ANIMEFACE_CACHE (model downloads). Run 'animeface COMMAND --help' for each command.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(sub, "enroll", "add a character from pictures or face crops", cmd_enroll)
    p.add_argument("name", nargs="?", help="character name (omit with --folders)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="pictures or folders (walked recursively)")
    p.add_argument("--folders", metavar="ROOT", help="enroll one character per subfolder of ROOT, named after it")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto",
                   help="detect: detected faces only; whole: each picture is a face crop; "
                        "auto (default): detect, else the whole picture")

    p = _command(sub, "identify", "name the faces in pictures", cmd_identify)
    p.add_argument("paths", nargs="+", metavar="PATH", help="pictures or folders")
    p.add_argument("--faces", choices=["detect", "auto", "whole"], default="detect",
                   help="detect (default), auto (whole picture when no face is found), or whole")
    p.add_argument("--json", action="store_true", help="print one JSON object per picture")

    p = _command(sub, "detect", "find faces and save copies with the boxes drawn", cmd_detect)
    p.add_argument("paths", nargs="+", metavar="PATH", help="pictures or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the annotated copies")
    p.add_argument("--names", action="store_true", help="also name each face against the gallery")

    _command(sub, "list", "list the enrolled characters", cmd_list)

    p = _command(sub, "forget", "remove a character from the gallery", cmd_forget)
    p.add_argument("name", help="character name")

    p = _command(sub, "sort", "sort a folder of pictures into one folder per character", cmd_sort)
    p.add_argument("src", nargs="?", metavar="SRC", help="folder of pictures (walked recursively)")
    p.add_argument("dst", nargs="?", metavar="DST", help="destination: DST/<character>/, DST/_unknown/, DST/_noface/")
    p.add_argument("--move", action="store_true", help="remove each source once all its copies are checked")
    p.add_argument("--dry-run", action="store_true", help="change nothing; print what would be done")
    p.add_argument("--faces", choices=["detect", "auto"], default="detect",
                   help="detect (default), or auto: a picture with no face found is taken as one face")
    p.add_argument("--jobs", type=int, metavar="N", help="decoding and detecting threads (default: CPU count)")
    p.add_argument("--undo", metavar="DST", help="reverse the latest sort into DST instead")

    p = sub.add_parser("evaluate", help="measure recognition on a folder of labelled pictures",
                       description="Enroll K pictures per character of ROOT (one subfolder each), identify the "
                                   "rest, and report accuracy, unknown rejection and thresholds.")
    p.set_defaults(run=cmd_evaluate)
    p.add_argument("root", metavar="ROOT", help="folder with one subfolder of pictures per character")
    p.add_argument("--shots", type=int, default=10, metavar="K", help="pictures enrolled per character (default 10)")
    p.add_argument("--unknown", type=int, default=0, metavar="N", help="characters held out as strangers (default 0)")
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="random splits, averaged (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the splits and the bootstrap (default 0)")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto",
                   help="how pictures become faces, for enrolling and identifying alike (default auto)")
    p.add_argument("--backbone", help="embedder backbone (default: ANIMEFACE_BACKBONE or 'imagenet')")
    p.add_argument("--cascade", help="face cascade XML (default: ANIMEFACE_CASCADE or the downloaded one)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object (the last line)")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots here (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="adapt the embedder to your own characters",
                       description="Train the embedder's projection on face crops, one subfolder per character "
                                   "under each ROOT, and save it (with its card) in --out. Use it with "
                                   "Recognizer(projection=PATH). The card records leave-characters-out figures "
                                   "for the untrained and trained embedder.",
                       epilog="example: animeface train faces/ --out my-embedder/ --name mine")
    p.set_defaults(run=cmd_train)
    p.add_argument("roots", nargs="+", metavar="ROOT", help="folder with one subfolder of face crops per character")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.npz and its card NAME.json")
    p.add_argument("--name", default="projection", help="file name of the projection (default: projection)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentation and the folds (default 0)")
    p.add_argument("--backbone", help="embedder backbone (default: ANIMEFACE_BACKBONE or 'imagenet')")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def _command(sub, name, help_text, run):
    p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
    p.set_defaults(run=run)
    p.add_argument("--gallery", metavar="DIR", help="gallery folder (default: ANIMEFACE_HOME or the per-user one)")
    p.add_argument("--backbone", help="embedder backbone (default: ANIMEFACE_BACKBONE or 'imagenet')")
    p.add_argument("--cascade", help="face cascade XML (default: ANIMEFACE_CASCADE or the downloaded one)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def open_recognizer(args):
    from .recognizer import Recognizer

    return Recognizer(args.gallery, backbone=args.backbone, cascade=args.cascade, progress=not args.quiet)


def cmd_enroll(args) -> int:
    if args.folders:
        if args.name or args.paths:
            raise SystemExit("animeface enroll: give either NAME PATH... or --folders ROOT, not both")
        root = Path(args.folders)
        if not root.is_dir():
            raise SystemExit(f"animeface enroll: {root} is not a folder")
        jobs = [(d.name, [d]) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "_"))]
        if not jobs:
            raise SystemExit(f"animeface enroll: {root} has no character subfolders")
    else:
        if not args.name or not args.paths:
            raise SystemExit("animeface enroll: give NAME and at least one PATH (or --folders ROOT)")
        jobs = [(args.name, args.paths)]
    rec = open_recognizer(args)
    for name, paths in jobs:
        print(rec.enroll(name, paths, faces=args.faces))
    rec.save()
    print(f"gallery {rec.path}: {len(rec.characters)} character(s)")
    return 0


def cmd_identify(args) -> int:
    from .io import iter_image_files

    rec = open_recognizer(args)
    if not rec.characters:
        print("animeface: warning: the gallery is empty; every face will be unknown "
              "(enroll characters first)", file=sys.stderr)
    files = iter_image_files(args.paths)
    results = rec.identify_batch(files, faces=args.faces)
    for path, faces in zip(files, results):
        if args.json:
            print(json.dumps({"path": str(path), "faces": [f.to_dict() for f in faces]}, ensure_ascii=False))
            continue
        if not faces:
            print(f"{path}: no face")
        for f in faces:
            name = f.label or "unknown"
            guess = "" if f.label else f" (best guess {f.candidates[0][0]} {f.candidates[0][1]:.2f})" if f.candidates else ""
            print(f"{path}: {name} {f.score:.2f} at {tuple(f.box)}{guess}")
    return 0


def cmd_detect(args) -> int:
    import cv2

    from .detect import Detector, draw_boxes
    from .errors import ImageError
    from .io import iter_image_files, load_image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec = open_recognizer(args) if args.names else None
    detector = rec.detector if rec else Detector(args.cascade)
    failed = 0
    for path in iter_image_files(args.paths):
        try:
            rgb = load_image(path)
        except ImageError as exc:
            print(f"animeface: skipped {exc}", file=sys.stderr)
            failed += 1
            continue
        if rec:
            faces = rec.identify(rgb)
            boxes, labels = [f.box for f in faces], [f"{f.label or 'unknown'} {f.score:.2f}" for f in faces]
        else:
            boxes, labels = detector.detect(rgb), None
        target = _free_name(out / (path.stem + ".jpg"))
        cv2.imwrite(str(target), cv2.cvtColor(draw_boxes(rgb, boxes, labels), cv2.COLOR_RGB2BGR))
        print(f"{path}: {len(boxes)} face(s) -> {target}")
    return 1 if failed else 0


def _free_name(path: Path) -> Path:
    """path, or path with -1, -2, ... added, whichever does not exist yet."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def cmd_sort(args) -> int:
    from .sort import sort_folder, undo

    if args.undo:
        if args.src or args.dst:
            raise SystemExit("animeface sort: --undo DST takes no other folders")
        summary = undo(args.undo, log=None if args.quiet else print)
        print(summary)
        return 1 if summary.kept else 0
    if not (args.src and args.dst):
        raise SystemExit("animeface sort: give SRC and DST (or --undo DST)")
    if args.jobs is not None and args.jobs < 1:
        raise SystemExit("animeface sort: --jobs must be at least 1")
    rec = open_recognizer(args)
    if not rec.characters:
        print("animeface: warning: the gallery is empty; every face will be unknown", file=sys.stderr)
    try:
        summary = sort_folder(rec, args.src, args.dst, move=args.move, dry_run=args.dry_run, faces=args.faces,
                              jobs=args.jobs, progress=not args.quiet, log=print if args.dry_run else None)
    except KeyboardInterrupt:
        print("animeface: interrupted; run the same command again to carry on, "
              f"or 'animeface sort --undo {args.dst}' to reverse it", file=sys.stderr)
        return 130
    print(summary)
    return 0


def cmd_list(args) -> int:
    rec = open_recognizer(args)
    if not rec.characters:
        print(f"gallery {rec.path} is empty")
    for name, count in rec.characters.items():
        print(f"{name}\t{count}")
    return 0


def cmd_forget(args) -> int:
    rec = open_recognizer(args)
    try:
        removed = rec.forget(args.name)
    except KeyError as exc:
        print(f"animeface: error: {exc.args[0]}", file=sys.stderr)
        return 1
    rec.save()
    print(f"forgot {args.name} ({removed} face(s))")
    return 0


def cmd_train(args) -> int:
    import shlex

    from .train import train

    out = Path(args.out)
    if (out / f"{args.name}.npz").exists() or (out / f"{args.name}.json").exists():
        raise SystemExit(f"animeface train: {out / args.name}.npz or .json already exists; "
                         "choose another --name or --out")
    words = ["animeface", "train", *args.roots, "--out", args.out, "--name", args.name, "--seed", str(args.seed)]
    command = " ".join(shlex.quote(w) for w in words + (["--backbone", args.backbone] if args.backbone else []))
    path = train(args.roots, out, name=args.name, backbone=args.backbone, seed=args.seed,
                 progress=not args.quiet, command=command)
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    print(f"wrote {path} and its card {path.with_suffix('.json')}")
    for space, by_shots in card["left_out_characters_top1"].items():
        print(f"  left-out characters, top-1, {space}: " + ", ".join(f"{k} {v:.1%}" for k, v in by_shots.items()))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate, format_report

    try:
        result = evaluate(args.root, shots=args.shots, unknown=args.unknown, repeats=args.repeats, seed=args.seed,
                          faces=args.faces, backbone=args.backbone, cascade=args.cascade, progress=not args.quiet)
    except ValueError as exc:
        raise SystemExit(f"animeface evaluate: {exc}") from None
    if args.plots:
        from .plots import write_plots

        for path in write_plots(result, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    result.pop("records")
    print(json.dumps(result, ensure_ascii=False) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
