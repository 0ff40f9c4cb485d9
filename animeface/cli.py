"""The `animeface` command line: enroll, identify, detect, list, forget (and sort, index, evaluate).

Heavy modules load inside each command, so `animeface --help` answers at once.
Each input that fails gets one line on stderr, and the exit status (EXIT_STATUS,
also in `animeface --help`) says whether all, some or none of the inputs went through.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from . import __version__, quiet
from .models import DEFAULT_DETECTOR, DETECTORS, STRANGER_REFUSAL
from .errors import AnimefaceError, GalleryError, InputError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_NOTHING_DONE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
#: What a shell reports for a program stopped by a closed pipe (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
EXIT_STATUS = """exit status:
  0    every input was processed
  1    an error stopped the command (no gallery, a model, the disk), said on stderr
  2    the command line is wrong (usage)
  3    some inputs failed, each named on stderr; the rest were processed
  4    no input was processed (a path that does not exist, a folder with no pictures, or every
       input failed)
  130  interrupted"""
BACKBONE_HELP = ("embedder backbone: 'imagenet' (the default; downloaded once), a path to Inception-v3 Keras .h5 "
                 "weights (the official notop file, or a .weights.h5 of the layers up to mixed8), or "
                 "'random-init[:SEED]' (random weights, for tests only). Default: ANIMEFACE_BACKBONE, else 'imagenet'")
PROJECTION_HELP = ("the embedder's trained projection: a NAME.npz made by 'animeface train' (its card NAME.json beside "
                   "it); default: the one shipped with animeface")
FACES_HELP = ("how pictures become faces: detect (detected faces only), whole (each picture is a face crop), or "
              "auto (detect; a picture with no face found, or a small square picture (a face crop) with at most "
              "one face found, is taken whole as a face crop, and the output says so)")
#: Formats an annotated copy keeps; others (GIF) are written as PNG.
WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Containers video --annotate writes (mp4v video in each).
ANNOTATED_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv")


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints, escaped, rather than crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    quiet.tensorflow_env()
    _plain_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        from .io import max_pixels

        max_pixels()  # a bad setting is said once, before any work
        return args.run(args)
    except UsageError as exc:
        print(f"animeface {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except InputError as exc:  # nothing to work on: the same status as inputs that all failed
        _failed(exc)
        return EXIT_NOTHING_DONE
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (AnimefaceError, OSError) as exc:  # OSError: the disk said no (full, read-only, permission)
        print(f"animeface: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("animeface: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class UsageError(Exception):
    """The command line is wrong: 'COMMAND: what to give instead'; exits with EXIT_USAGE."""


def _plain_warnings() -> None:
    """Our own warnings as one 'animeface: warning: ...' line each, with no source line; other
    libraries' warnings (TensorFlow, Keras) say nothing a user can act on and are not shown."""
    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", module=r"animeface(\.|$)")
    warnings.showwarning = lambda message, *_: _say(f"warning: {str(message).removeprefix('animeface: ')}")


def _progress(args) -> bool:
    """Progress bars only on a terminal: redirected to a file they are noise."""
    return not args.quiet and sys.stderr.isatty()


def _say(line: str) -> None:
    print(f"animeface: {line}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="animeface", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find anime faces in pictures and name the characters you enrolled.",
        epilog="examples:\n"
               "  animeface enroll 'Hatsune Miku' miku1.png miku_folder/\n"
               "  animeface identify scene.jpg\n"
               "  animeface sort ~/Downloads/anime ~/Pictures/by-character\n\n"
               "environment: ANIMEFACE_HOME (default gallery), ANIMEFACE_BACKBONE, ANIMEFACE_DETECTOR,\n"
               "  ANIMEFACE_CASCADE, ANIMEFACE_CACHE (model downloads), ANIMEFACE_MAX_PIXELS (largest picture\n"
               "  read, default 80000000).\n"
               "Run 'animeface COMMAND --help' for each command.\n\n"
               + EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"animeface {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(sub, "enroll", "add a character from pictures or face crops", cmd_enroll,
                 "animeface enroll 'Hatsune Miku' miku1.png miku_folder/\n"
                 "animeface enroll --folders characters/          # one subfolder per character\n"
                 "animeface enroll 'Hatsune Miku' --cluster 3 --from groups/   # group 3 of 'cluster --out groups/'",
                 naming=False)
    p.add_argument("name", nargs="?", help="character name (omit with --folders)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="pictures or folders (walked recursively)")
    p.add_argument("--folders", metavar="ROOT", help="enroll one character per subfolder of ROOT, named after it")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto", help=FACES_HELP + "; default auto")
    p.add_argument("--cluster", type=int, metavar="ID", help="enroll the faces of group ID of a 'cluster --out' run "
                                                             "(with --from; no PATH)")
    p.add_argument("--from", dest="cluster_run", metavar="DIR", help="the folder a 'cluster --out DIR' run wrote")
    p.add_argument("-v", "--verbose", action="store_true", help="list each skipped picture with its reason")
    p.add_argument("--json", action="store_true", help="print what was enrolled and skipped as one JSON object")

    p = _command(sub, "identify", "name the faces in pictures", cmd_identify,
                 "animeface identify scene.jpg more_pictures/\n"
                 "animeface identify face_crop.png --json")
    p.add_argument("paths", nargs="+", metavar="PATH", help="pictures or folders")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto", help=FACES_HELP + "; default auto")
    p.add_argument("--json", action="store_true", help="print one JSON object per picture, as each is done")

    p = _command(sub, "video", "name the characters through video clips, as tracks on a timeline", cmd_video,
                 "animeface video episode01.mkv\n"
                 "animeface video clips/ --every 0.5 --out timeline/   # then open timeline/timeline.html\n"
                 "animeface video episode01.mkv --json")
    p.add_argument("paths", nargs="+", metavar="CLIP",
                   help="video files (mp4, mkv, webm, avi, animated GIF: what OpenCV reads) or folders")
    p.add_argument("--every", type=_seconds, default=0.25, metavar="SECONDS",
                   help="seconds between the frames looked at (default 0.25: 4 a second); a track's start and end "
                        "are known to within this")
    p.add_argument("--out", metavar="DIR", help="write timeline.html (one lane per character, with thumbnails), "
                                                "timeline.png and tracks.csv here (never replacing a file)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per track as each ends, and one per clip when it is done")
    p.add_argument("--annotate", metavar="OUT", help="write the clip (one CLIP only) again to OUT (.mp4, .m4v, .mov, "
                                                      ".avi or .mkv; never replacing a file) with each track's box "
                                                      "and name drawn")
    p.add_argument("--group-unknown", action="store_true",
                   help="with --out: group the unknown tracks by character as 'animeface cluster' does, and save "
                        "the groups there (index.html), for 'animeface enroll NAME --cluster ID --from DIR'; a group "
                        "needs at least 5 tracks. Needs no gallery: without one, every track is grouped")
    p.add_argument("--similarity", type=float, metavar="S",
                   help="with --group-unknown: mean cosine similarity two groups need to merge (default: from the "
                        "embedder's calibration; higher gives smaller, purer groups)")

    p = _command(sub, "explain", "show which parts of each face its best candidates matched", cmd_explain,
                 "animeface explain scene.jpg --out why/          # then open why/index.html\n"
                 "animeface explain face_crop.png --faces whole --top 1 --json")
    p.add_argument("paths", nargs="+", metavar="PATH", help="pictures or folders")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto", help=FACES_HELP + "; default auto")
    p.add_argument("--top", type=int, choices=(1, 2, 3), default=3, help="candidates explained per face (default 3)")
    p.add_argument("--out", metavar="DIR", help="write here, per face, the crop and each candidate's map laid over "
                                                "it (red: added to the similarity, blue: took away), and a contact "
                                                "sheet index.html; no file is ever overwritten")
    p.add_argument("--json", action="store_true", help="print one JSON object per picture, as each is done: per "
                                                       "face and candidate, the map (rows top to bottom) and the "
                                                       "colour histogram's share")

    p = _command(sub, "cluster", "group the faces nobody has enrolled by character (a group needs at least 5 faces "
                                 "alike: enough to enroll from)", cmd_cluster,
                 "animeface cluster new_pictures/ --out groups/    # then open groups/index.html\n"
                 "animeface enroll 'Hatsune Miku' --cluster 1 --from groups/\n"
                 "animeface cluster face_crops/ --faces whole --json\n"
                 "animeface cluster --index collection-index/ --out groups/   # from 'animeface index': no embedding")
    p.add_argument("paths", nargs="*", metavar="PATH", help="pictures or folders")
    p.add_argument("--index", metavar="DIR", help="group the unknown faces of an index made by 'animeface index "
                                                  "--out DIR' from its stored vectors, embedding nothing again "
                                                  "(instead of PATH; the faces the index names are set aside)")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto", help=FACES_HELP + "; default auto")
    p.add_argument("--out", metavar="DIR", help="write the groups here: a contact sheet (index.html) to choose names "
                                                "from, and the run, for 'enroll NAME --cluster ID --from DIR'")
    p.add_argument("--json", action="store_true", help="print the groups as one JSON object (the last line)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every face of each group, not one example")
    p.add_argument("--similarity", type=float, metavar="S",
                   help="mean cosine similarity two groups need to merge (default: from the embedder's calibration; "
                        "higher gives smaller, purer groups)")

    p = _command(sub, "detect", "find faces and save copies with the boxes drawn", cmd_detect,
                 "animeface detect pictures/ --out checked/\n"
                 "animeface detect scene.png --out checked/ --names\n"
                 "animeface detect scene.png --json                 # just the boxes")
    p.add_argument("paths", nargs="+", metavar="PATH", help="pictures or folders")
    p.add_argument("--out", metavar="DIR",
                   help="folder for the annotated copies (subfolders and formats kept; never overwritten)")
    p.add_argument("--names", action="store_true", help="also name each face against the gallery")
    p.add_argument("--json", action="store_true", help="print one JSON object per picture, with its boxes (no --out "
                                                       "needed)")

    p = _command(sub, "list", "list the enrolled characters", cmd_list,
                 "animeface list --gallery galleries/mine\nanimeface list -q                # names only", network=False)
    p.add_argument("-q", "--quiet", action="store_true", help="the names alone, one a line")
    p.add_argument("--json", action="store_true", help="print the characters and their counts as one JSON object")

    p = _command(sub, "forget", "remove a character, or some of its pictures, from the gallery", cmd_forget,
                 "animeface forget 'Hatsune Miku'\n"
                 "animeface forget 'Hatsune Miku' wrong1.png wrong2.png   # only the faces of these pictures",
                 network=False)
    p.add_argument("name", help="character name")
    p.add_argument("pictures", nargs="*", metavar="PICTURE",
                   help="forget only this character's faces of these pictures (known by their content), so that "
                        "they can be enrolled under another name")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when it worked")
    p.add_argument("--json", action="store_true", help="print what was removed as one JSON object")

    p = _command(sub, "sort", "sort a folder of pictures into one folder per character", cmd_sort,
                 "animeface sort ~/Downloads/anime ~/Pictures/by-character\n"
                 "animeface sort SRC DST --move --dry-run         # see what would happen\n"
                 "animeface sort SRC DST --group-unknown           # unknown pictures into _unknown/group-01/, ...\n"
                 "animeface sort SRC DST --index DIR               # by the faces 'animeface index SRC --out DIR' named\n"
                 "animeface sort --undo DST                        # reverse the latest sort into DST")
    p.add_argument("src", nargs="?", metavar="SRC", help="folder of pictures (walked recursively)")
    p.add_argument("dst", nargs="?", metavar="DST", help="destination: DST/<character>/, DST/_unknown/, DST/_noface/")
    p.add_argument("--move", action="store_true", help="remove each source once all its copies are checked")
    p.add_argument("--dry-run", action="store_true", help="change nothing; print what would be done")
    p.add_argument("--faces", choices=["detect", "auto"], default="detect",
                   help="detect (default: a picture with no face found goes to _noface/), or auto: also face "
                        "crops, taken whole")
    p.add_argument("--group-unknown", action="store_true",
                   help="file the pictures with no named face into _unknown/group-01/, group-02/, ... by character "
                        "(01 the largest group), grouped as 'animeface cluster' groups them (a group needs at least 5 "
                        "faces); a picture whose faces fit no group goes to _unknown/. Needs no gallery: without one, "
                        "every picture with a face is grouped. With no gallery yet at the default place, sort does "
                        "this by itself")
    p.add_argument("--similarity", type=float, metavar="S",
                   help="with --group-unknown: mean cosine similarity two groups need to merge (default: from the "
                        "embedder's calibration; higher gives smaller, purer groups)")
    p.add_argument("--jobs", type=int, metavar="N", help="decoding and detecting threads (default: CPU count)")
    p.add_argument("--index", metavar="DIR",
                   help="place each picture by the faces an index of SRC ('animeface index SRC --out DIR') holds, "
                        "detecting and embedding nothing again (its gallery named them); a picture it does not "
                        "hold, or that changed since, is left in place")
    p.add_argument("--undo", metavar="DST",
                   help="reverse the latest sort into DST instead (with --dry-run: only say what it would do)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each file's action as it is done")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object (the last line)")

    p = _command(sub, "index", "index every face of many pictures into a Parquet table, on Ray", cmd_index,
                 "animeface index ~/collection --out collection-index/\n"
                 "animeface index SRC --out DIR --address 10.0.0.5:6379      # on a cluster made by 'ray start --head'\n"
                 "animeface index SRC --out DIR                # again: indexes only the pictures not yet written\n"
                 "python -c \"import animeface; print(animeface.read_index('collection-index/'))\"")
    p.add_argument("paths", nargs="+", metavar="SRC", help="pictures or folders (walked recursively)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder of the index: Parquet files, one row per face (a new or empty folder, or the "
                        "folder of an earlier run, which is carried on)")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto", help=FACES_HELP + "; default auto")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="join this running Ray cluster (started with 'ray start --head'); default: RAY_ADDRESS, "
                        "else Ray starts on this machine and stops at the end")
    p.add_argument("--part-size", type=int, metavar="N",
                   help="pictures per Parquet file (default 1000); a killed run loses at most the part it was "
                        "writing")

    p = _command(sub, "serve", "a web page to identify, teach and browse the gallery", cmd_serve,
                 "animeface serve                                  # then open http://127.0.0.1:8765/\n"
                 "animeface serve --gallery galleries/mine --port 9000\n"
                 "The JSON API is under /api/ (schema: /api/openapi.json). Requests that change the gallery need\n"
                 "the X-Animeface-Token header holding the token printed at start (new each run).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 lets anyone on the "
                        "network open the page and change the gallery)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 picks a free one)")

    p = sub.add_parser("evaluate", help="measure recognition on a folder of labelled pictures",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Enroll K pictures per character of ROOT (one subfolder each), identify the "
                                   "rest, and report how many strangers (--unknown) were called unknown, how many "
                                   "known faces were named right, and how well the scores are calibrated. It works "
                                   "on temporary galleries, so it takes no --gallery.",
                       epilog="example:\n  animeface evaluate characters/ --shots 10 --unknown 5 --json")
    p.set_defaults(run=cmd_evaluate)
    p.add_argument("root", metavar="ROOT", help="folder with one subfolder of pictures per character")
    p.add_argument("--shots", type=int, default=10, metavar="K", help="pictures enrolled per character (default 10)")
    p.add_argument("--unknown", type=int, default=0, metavar="N", help="characters held out as strangers (default 0)")
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="random splits, averaged (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the splits and the bootstrap (default 0)")
    p.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto", help=FACES_HELP + "; default auto")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object (the last line)")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots here (needs matplotlib)")
    _network_options(p)

    p = sub.add_parser("train", help="adapt the embedder to your own characters",
                       description="Train the embedder's projection on face crops, one subfolder per character "
                                   "under each ROOT (at least 10 characters in all), and save it (with its card) in "
                                   "--out. It prints how characters left out of the fit are named, untrained and "
                                   "trained, and warns when training made that worse. Use it with "
                                   "--projection PATH (or Recognizer(projection=PATH)). The card records leave-characters-out figures "
                                   "for the untrained and trained embedder.",
                       epilog="example: animeface train faces/ --out my-embedder/ --name mine")
    p.set_defaults(run=cmd_train)
    p.add_argument("roots", nargs="+", metavar="ROOT", help="folder with one subfolder of face crops per character")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.npz and its card NAME.json")
    p.add_argument("--name", default="projection", help="file name of the projection (default: projection)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentation and the folds (default 0)")
    p.add_argument("--backbone", help=BACKBONE_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the left-out figures as one JSON object")
    return parser


def _command(sub, name, help_text, run, examples: str, network: bool = True, naming: bool = True):
    """A subcommand with --gallery, and with the embedder's options unless it never uses the network
    (and --refuse-strangers if it names faces)."""
    p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n" + "".join(f"  {line}\n" for line in examples.splitlines()))
    p.set_defaults(run=run)
    p.add_argument("--gallery", metavar="DIR", help="gallery folder (default: ANIMEFACE_HOME or the per-user one)")
    if network:
        _network_options(p, naming)
    return p


def _network_options(p, naming: bool = True) -> None:
    p.add_argument("--backbone", help=BACKBONE_HELP)
    p.add_argument("--projection", metavar="NPZ", default="default", help=PROJECTION_HELP)
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help="face detector: faceboxes, the learned one (default; weights from ANIMEFACE_DETECTOR or the "
                        "download), or cascade, the LBP cascade (faster, misses more faces)")
    p.add_argument("--cascade", help="face cascade XML (default: ANIMEFACE_CASCADE or the downloaded one)")
    if naming:
        p.add_argument("--refuse-strangers", type=_share, default=STRANGER_REFUSAL, metavar="SHARE",
                       help="share of faces of characters nobody enrolled to call unknown, between 0 and 1 "
                            f"(default {STRANGER_REFUSAL}); higher also calls more enrolled faces unknown")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no loading message")


# -- shared steps ---------------------------------------------------------------------


def _share(text: str) -> float:
    """--refuse-strangers: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (such as 0.9), got {text!r}")
    return value


def _seconds(text: str) -> float:
    """--every: a number of seconds above 0."""
    from .video import check_every

    try:
        return check_every(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 (such as 0.25), got {text!r}") from None


def gallery_path(args) -> Path:
    """The folder --gallery names, else the default gallery's."""
    from .recognizer import default_gallery_path

    return Path(args.gallery).expanduser() if args.gallery else default_gallery_path()


def open_recognizer(args, create: bool = False):
    """The gallery named by --gallery (or the default one). Only enroll may create one: for any other
    verb a folder with no gallery in it is an error naming it, never a silently empty gallery."""
    from .recognizer import Recognizer

    path = gallery_path(args)
    if not create:
        check_gallery(args)
    if not hasattr(args, "backbone"):  # list, forget: they never embed, so any backbone setting opens any gallery
        return Recognizer(path, backbone="imagenet", check_backbone=False, progress=False)
    return Recognizer(path, backbone=args.backbone, projection=args.projection, cascade=args.cascade,
                      detector=args.detector, stranger_refusal=getattr(args, "refuse_strangers", STRANGER_REFUSAL),
                      progress=_progress(args))


def check_gallery(args) -> None:
    """A folder with no gallery in it, named by --gallery (or the default gallery's), is an error naming it."""
    from .gallery import Gallery

    path = gallery_path(args)
    if not Gallery.exists(path):
        option = f"--gallery {path}" if args.gallery else f"the default gallery {path}"
        raise GalleryError(f"{option}: no gallery there (no gallery.json); check the folder's name, "
                           "or enroll characters into it first with 'animeface enroll'")


def load_embedder(rec, args, maps: bool = False) -> None:
    """Load the network now, saying so, rather than in silence at the first picture; TensorFlow's
    native log lines are dropped while it loads. An empty gallery needs no network, so none loads.
    The face detector is found first: a missing one is said at once, not after a conversion.
    maps=True loads the network that gives the feature maps (explain) instead."""
    import numpy as np

    detecting = getattr(args, "faces", "detect") != "whole"
    check_models(args, detector=detecting)
    if detecting:
        rec.detector  # noqa: B018 - loads the detector: a damaged file is said now, not at the first picture
    if not args.quiet:
        _say("loading the embedder ...")
    size = rec.embedder.input_size
    blank = np.zeros((1, size, size, 3), np.uint8)
    with quiet.native_stderr_silenced():
        rec.embedder.feature_maps(blank) if maps else rec.embedder.embed(blank)


def check_models(args, detector: bool = True, backbone: bool = True) -> None:
    """Find every model file the command needs before any work, downloading what is missing, and name
    all that cannot be had in one error, each with the variable that points at a local copy: offline,
    a first run would otherwise fail once per file."""
    from .backbone import check_weights
    from .cascade import cascade_path
    from .errors import ModelError
    from .faceboxes import weights_path

    steps = []
    if detector:
        steps.append(lambda: cascade_path(args.cascade))  # the fast mode, and FaceBoxes' second opinion
        if args.detector == "faceboxes":
            steps.append(weights_path)
    if backbone:
        steps.append(lambda: check_weights(args.backbone))
    problems = []
    for step in steps:
        try:
            step()
        except ModelError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise ModelError(problems[0])
    if problems:
        raise ModelError(f"{len(problems)} model files are missing:\n" + "\n".join(f"  - {p}" for p in problems))


def _failed(message) -> None:
    """One line on stderr for an input that could not be used (the message names it)."""
    _say(f"failed: {message}")


def _json_failed(path, error, **more) -> None:
    """The JSON line of a picture that could not be used (identify, detect): its error, no faces."""
    print(json.dumps({"path": str(path), "error": str(error), "faces": [], **more}, ensure_ascii=False), flush=True)


def _status(done: int, failed: int) -> int:
    if not done:
        return EXIT_NOTHING_DONE
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _pictures(paths, keep=None, kind: str = "pictures") -> list[tuple[Path, Path]]:
    """The inputs given, for every command alike: (file, its path relative to the folder given, or its
    name for a file given), folders walked by the one rule (io.iter_image_files; keep: video's own
    rule for its files). A path that does not exist is kept, for reading to say so in its turn
    (identify streams its results); a folder with none is said on stderr."""
    from .io import iter_image_files

    found = []
    for given in map(Path, paths):
        if given.is_dir():
            pictures = iter_image_files([given], keep)
            if not pictures:
                _say(f"no {kind} in {given}")
            found += [(f, f.relative_to(given)) for f in pictures]
        else:
            found.append((given, Path(given.name)))
    return found


def _none_there(pictures: list[Path]) -> bool:
    """Whether none of the pictures exists (each said on stderr): the command stops there, before it
    makes or loads anything."""
    if any(os.path.lexists(p) for p in pictures):
        return False
    for path in pictures:
        _failed(f"{path}: no such file or folder")
    return True


def _folder(path, what: str) -> Path:
    """A folder argument that must exist: InputError ('no such folder') otherwise."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"{what}: {path}: " + ("not a folder" if os.path.lexists(folder) else "no such folder"))
    return folder


def _warn_if_empty(rec) -> None:
    if not rec.characters:
        _say(f"warning: the gallery {rec.path} is empty; every face will be unknown (enroll characters first)")


def face_text(face) -> str:
    """A face for people: the name and its score, or 'unknown' with the best guess, its probability and
    the threshold that refused it; where the face is, or that the whole picture was taken as one."""
    where = "whole picture, taken as a face crop" if face.whole_picture else f"at {tuple(face.box)}"
    if face.label:
        return f"{face.label} {face.score:.2f} {where}"
    if face.reason:  # it names the best guess and its probability
        return f"unknown {where} ({face.reason})"
    guess = f" (best guess {face.candidates[0][0]} {face.candidates[0][1]:.2f})" if face.candidates else ""
    return f"unknown {where}{guess}"


# -- the verbs --------------------------------------------------------------------------


def cmd_enroll(args) -> int:
    from .gallery import validate_name

    if args.cluster is not None or args.cluster_run:
        return enroll_group(args)
    failed = 0
    if args.folders:
        if args.name or args.paths:
            raise UsageError("enroll: give either NAME PATH... or --folders ROOT, not both")
        root = _folder(args.folders, "enroll --folders")
        jobs = []
        for d in sorted(root.iterdir()):
            if d.is_dir() and not d.name.startswith((".", "_")):
                try:  # one badly named subfolder is reported; the others are still enrolled
                    jobs.append((validate_name(d.name), [d]))
                except AnimefaceError as exc:
                    _failed(f"{d}: {exc}")
                    failed += 1
        if not jobs and not failed:
            raise InputError(f"enroll --folders: {root} has no character subfolders")
    else:
        if not args.name or not args.paths:
            raise UsageError("enroll: give NAME and at least one PATH (or --folders ROOT)")
        jobs = [(validate_name(args.name), args.paths)]
    jobs = [(name, [f for f, _ in _pictures(paths)]) for name, paths in jobs]
    given = [f for _, files in jobs for f in files]
    if _none_there(given):  # nothing to enroll: no gallery is made and no network loaded
        return _status(0, failed + len(given))
    rec = open_recognizer(args, create=True)
    load_embedder(rec, args)
    reports = [rec.enroll(name, paths, faces=args.faces) for name, paths in jobs]
    for report in reports:
        for _, why in report.failed:
            _failed(why)
    _save_and_tell(rec, args, reports)
    done = sum(len(r.used) + len(r.skipped) for r in reports)
    return _status(done, failed + sum(len(r.failed) for r in reports))


def _save_and_tell(rec, args, reports) -> None:
    """Save the gallery if anything was enrolled, and only then say what was: a save that fails is
    the one message, never after a success that did not happen."""
    if any(r.used for r in reports):
        rec.save()
    if args.json:
        print(json.dumps({"gallery": str(rec.path), "characters": rec.characters,
                          "enrolled": [r.to_dict() for r in reports]}, ensure_ascii=False))
        return
    for report in reports:
        print(report)
        if args.verbose:
            print("\n".join(report.details()))
    print(f"gallery {rec.path}: {len(rec.characters)} character(s)")


def enroll_group(args) -> int:
    """enroll NAME --cluster ID --from DIR: the faces of one group of a saved cluster run."""
    from .gallery import validate_name

    if args.cluster is None or not args.cluster_run or args.name is None or args.paths or args.folders:
        raise UsageError("enroll: give NAME --cluster ID --from DIR, with no PATH and no --folders")
    validate_name(args.name)
    rec = open_recognizer(args, create=True)
    _save_and_tell(rec, args, [rec.enroll_group(args.name, args.cluster_run, args.cluster)])
    return EXIT_OK


def cmd_cluster(args) -> int:
    from .cluster import check_free
    from .gallery import Gallery

    if bool(args.paths) == bool(args.index):
        raise UsageError("cluster: give PATH... or --index DIR (one of them)")
    if args.out:
        check_free(Path(args.out))  # before minutes of work, not after
    if args.index:
        from .index import index_clusters

        result, made_with, pictures = index_clusters(args.index, args.similarity)
    else:
        if not Gallery.exists(gallery_path(args)):
            _say(f"no gallery at {gallery_path(args)}: no face is set aside as already named")
        paths = [p for p, _ in _pictures(args.paths)]
        if _none_there(paths):
            return _status(0, len(paths))
        rec = open_recognizer(args, create=True)  # grouping needs no gallery, and saves none
        load_embedder(rec, args)
        result = rec.cluster(paths, faces=args.faces, threshold=args.similarity, thumbnails=bool(args.out))
        pictures, made_with = len(paths), rec.run_description()
    for message in result.failed:
        _failed(message)
    groups = result.groups
    lines = [f"{len(result.faces) + len(result.named)} face(s) in {pictures - len(result.failed)} picture(s): "
             f"{len(groups)} group(s), {len(result.ungrouped)} ungrouped, {len(result.named)} named by the gallery "
             f"(threshold {result.threshold:.3f})"]
    for g, faces in enumerate(groups, 1):
        lines.append(f"  group {g}: {len(faces)} faces" + ("" if args.verbose else f", e.g. {faces[0].source}"))
        if args.verbose:
            lines += [f"    {face.source} at {tuple(face.box)}" for face in faces]
    if args.out:
        sheet = result.save(Path(args.out), made_with)
        lines.append(f"contact sheet: {sheet}; name a group with 'animeface enroll NAME --cluster ID --from {args.out}'")
    if args.json:
        if not args.quiet:
            print("\n".join(lines), file=sys.stderr)
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print("\n".join(lines))
    return _status(pictures - len(result.failed), len(result.failed))


def cmd_identify(args) -> int:
    from .errors import ImageError

    rec = open_recognizer(args)
    _warn_if_empty(rec)
    pictures = [path for path, _ in _pictures(args.paths)]
    if rec.characters and pictures:
        load_embedder(rec, args)
    elif pictures:  # an empty gallery names nobody, so no network; faces are still found
        check_models(args, detector=args.faces != "whole", backbone=False)
    done = failed = 0
    for path, faces in rec.identify_iter(pictures, faces=args.faces):
        if isinstance(faces, ImageError):
            _failed(faces)
            failed += 1
            if args.json:
                _json_failed(path, faces)
            continue
        done += 1
        if args.json:
            print(json.dumps({"path": str(path), "error": None, "faces": [f.to_dict() for f in faces]},
                             ensure_ascii=False), flush=True)
        else:
            for line in [face_text(f) for f in faces] or ["no face"]:
                print(f"{path}: {line}", flush=True)
    return _status(done, failed)


def cmd_video(args) -> int:
    """Each clip in turn (_video_clip); a clip that cannot be read is said and the others carry on; a
    truncated one reports what was read, and counts as failed. Then the timeline and the groups."""
    from . import timeline
    from .cluster import check_free
    from .video import group_unknown, is_video

    if args.group_unknown and not args.out:
        raise UsageError("video: --group-unknown saves its groups in --out DIR: give one")
    if args.similarity is not None and not args.group_unknown:
        raise UsageError("video: --similarity goes with --group-unknown")
    if args.annotate:
        if len(args.paths) != 1 or Path(args.paths[0]).is_dir():
            raise UsageError("video: --annotate OUT takes one CLIP, not several or a folder")
        if Path(args.annotate).suffix.lower() not in ANNOTATED_SUFFIXES:
            raise UsageError(f"video: --annotate: name the file {', '.join(ANNOTATED_SUFFIXES)}")
        if os.path.lexists(args.annotate):
            raise AnimefaceError(f"{args.annotate} already exists: choose a new name for --annotate")
    if args.out:
        timeline.check_free(Path(args.out))  # before minutes of work, not after
        if args.group_unknown:
            check_free(Path(args.out))
    rec = open_recognizer(args, create=args.group_unknown)  # grouping needs no gallery
    if not args.group_unknown:
        _warn_if_empty(rec)
    clips = [path for path, _ in _pictures(args.paths, is_video, "videos")]
    if clips:
        load_embedder(rec, args)
    runs = [_video_clip(rec, path, args) for path in clips]
    said = sys.stderr if args.json else sys.stdout
    if args.out and runs:
        print(f"timeline: {timeline.write(Path(args.out), runs)}", file=said)
    if args.group_unknown and runs:
        groups = group_unknown(rec, [(run.clip, run.tracks) for run in runs], args.similarity)
        sheet = groups.save(Path(args.out), rec.run_description())
        print(f"unknown tracks: {groups.count} group(s), {len(groups.ungrouped)} ungrouped; contact sheet: {sheet}; "
              f"name a group with 'animeface enroll NAME --cluster ID --from {args.out}'", file=said)
    failed = sum(run.error is not None for run in runs)
    return _status(len(runs) - failed, failed)


def _video_clip(rec, path: Path, args):
    """video's work on one clip: its tracks said as they end, then its time on screen per character;
    a clip that cannot be read is said (a truncated one after the tracks of what was read)."""
    from .errors import ImageError
    from .timeline import ClipRun
    from .video import Clip, annotate, follow, on_screen

    run = ClipRun(str(path))
    try:
        clip = Clip(path)
        try:
            for track in follow(rec, clip, args.every, thumbnails=bool(args.out)):
                run.tracks.append(track)
                if args.json:
                    print(json.dumps({"clip": run.clip, **track.to_dict()}, ensure_ascii=False), flush=True)
                else:
                    print(f"{path}: {track.start:.2f}-{track.end:.2f} s {face_text(track.face)} "
                          f"(track {track.number}, {track.frames} frames, box at {track.at:.2f} s)", flush=True)
        finally:
            run.seconds, run.sampled = clip.seconds, clip.sampled
        if args.annotate:
            annotate(Clip(path), run.tracks, Path(args.annotate))
            print(f"annotated: {args.annotate}", file=sys.stderr if args.json else sys.stdout)
    except ImageError as exc:
        run.error = str(exc)
    screen = on_screen(run.tracks)
    if args.json:
        print(json.dumps({"clip": run.clip, "error": run.error, "seconds": round(run.seconds, 3),
                          "sampled": run.sampled, "tracks": len(run.tracks),
                          "on_screen": [{"label": k, "seconds": round(v, 3)} for k, v in screen.items()]},
                         ensure_ascii=False), flush=True)
    elif run.sampled:
        shown = ", ".join(f"{k or 'unknown'} {v:.1f} s" for k, v in screen.items()) or "no faces"
        print(f"{path}: {run.seconds:.1f} s, {run.sampled} frames sampled, {len(run.tracks)} track(s); "
              f"on screen: {shown}", flush=True)
    if run.error:
        _failed(run.error)
    return run

def cmd_explain(args) -> int:
    from .errors import ImageError
    from .explain import SHEET_FILE, check_free, contact_sheet

    out = Path(args.out) if args.out else None
    if out:
        check_free(out)  # before minutes of work, not after
    rec = open_recognizer(args)
    rec.check_explainable(args.top)  # before the network loads
    pictures = _pictures(args.paths)
    if pictures:
        load_embedder(rec, args, maps=True)
    done = failed = 0
    sections = []
    for path, relative in pictures:
        try:
            items = rec.explain(path, faces=args.faces, top=args.top)
        except ImageError as exc:
            _failed(exc)
            failed += 1
            if args.json:
                print(json.dumps({"path": str(path), "error": str(exc), "explanations": []}, ensure_ascii=False),
                      flush=True)
            continue
        done += 1
        if out:
            sections.append((str(path), _write_overlays(out, relative, items)))
        if args.json:
            print(json.dumps({"path": str(path), "error": None, "explanations": [i.to_dict() for i in items]},
                             ensure_ascii=False), flush=True)
            continue
        for item in items:
            print(f"{path}: face {item.where}: {item.candidate} similarity {item.similarity:.3f} (probability "
                  f"{item.probability:.2f}{', named' if item.label == item.candidate else ''}), colour "
                  f"{item.colour_share:.0%}, hottest {item.hottest}", flush=True)
        if not items:
            print(f"{path}: no face", flush=True)
    if out and sections:
        from . import files

        files.write_bytes(out / SHEET_FILE, contact_sheet(sections).encode("utf-8", "backslashreplace"))
        (_say if args.json else print)(f"contact sheet: {out / SHEET_FILE}")
    return _status(done, failed)


def _write_overlays(out: Path, relative: Path, items) -> list[tuple]:
    """Write each face's crop and its candidates' maps laid over it into out, under new names; returns
    (item, crop file, overlay file) per item, for the contact sheet."""
    import cv2

    from . import files
    from .explain import heat_scale, overlay

    stem = files.fit_name("_".join(relative.with_suffix("").parts), 160)
    written, faces = [], {}
    for item in items:
        faces.setdefault(item.face, []).append(item)

    def write(name: str, rgb) -> str:
        target = _free_name(out / name)
        files.write_bytes(target, cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
        return target.name

    for n, face_items in enumerate(faces.values(), 1):
        crop = write(f"{stem}-face{n}.jpg", face_items[0].crop)
        scale = heat_scale([i.heat for i in face_items])  # one scale: candidates compare
        for k, item in enumerate(face_items, 1):
            written.append((item, crop, write(f"{stem}-face{n}-{k}.jpg", overlay(item.crop, item.heat, scale))))
    return written


def cmd_detect(args) -> int:
    import cv2

    from . import files
    from .detect import Detector, draw_boxes
    from .errors import ImageError
    from .io import load_image

    if not args.out and not args.json:
        raise UsageError("detect: give --out DIR for annotated copies, or --json to print the boxes")
    out = Path(args.out) if args.out else None
    rec = None
    if args.names:
        rec = open_recognizer(args)
        _warn_if_empty(rec)
        if rec.characters:
            load_embedder(rec, args)
    if not rec or not rec.characters:
        check_models(args, backbone=False)
    detector = rec.detector if rec else Detector(args.detector, cascade=args.cascade)
    done = failed = 0
    for path, relative in _pictures(args.paths):
        try:
            rgb = load_image(path)
        except ImageError as exc:
            _failed(exc)
            failed += 1
            if args.json:
                _json_failed(path, exc, out=None)
            continue
        if rec:
            faces = rec.identify(rgb, faces="detect")
            boxes = [f.box for f in faces]
            labels = [f"{f.label} {f.score:.2f}" if f.label else "unknown" for f in faces]
        else:
            boxes, labels = detector.detect(rgb), None
        target = None
        if out:
            suffix = relative.suffix.lower() if relative.suffix.lower() in WRITABLE_SUFFIXES else ".png"
            target = _free_name(out / relative.with_suffix(suffix))
            if not files.inside(out, target.parent):
                _failed(f"{path}: {target.parent} leads outside {out} (a link); not written")
                failed += 1
                continue
            encoded = cv2.imencode(suffix, cv2.cvtColor(draw_boxes(rgb, boxes, labels), cv2.COLOR_RGB2BGR))[1]
            files.write_bytes(target, encoded.tobytes())  # a new file, never through a link (imwrite follows them)
        if args.json:
            if rec:
                shown = [f.to_dict() for f in faces]
            else:
                shown = [{"box": list(b), "box_score": b.score, "box_angle": b.angle} for b in boxes]
            print(json.dumps({"path": str(path), "error": None, "faces": shown, "out": target and str(target)},
                             ensure_ascii=False), flush=True)
        else:
            where = f" -> {target}" if target else ": " + ", ".join(f"{tuple(b)} {b.score:.2f}" for b in boxes)
            print(f"{path}: {len(boxes)} face(s){where}", flush=True)
        done += 1
    return _status(done, failed)


def _free_name(path: Path) -> Path:
    """path, or path with -1, -2, ... added, whichever is not taken yet (a dangling link takes its name)."""
    candidate, n = path, 0
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def cmd_sort(args) -> int:
    from tqdm import tqdm

    from .cluster import MIN_GROUP
    from .sort import UNKNOWN, check_folders, sort_folder, undo

    if args.undo:
        if args.src or args.dst:
            raise UsageError("sort: --undo DST takes no other folders")
        summary = undo(args.undo, dry_run=args.dry_run, log=None if args.quiet or args.json else print)
        print(json.dumps(summary.to_dict(), ensure_ascii=False) if args.json else summary)
        return EXIT_SOME_FAILED if summary.kept else EXIT_OK
    if not (args.src and args.dst):
        raise UsageError("sort: give SRC and DST (or --undo DST)")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("sort: --jobs must be at least 1")
    from .gallery import Gallery

    # No gallery yet (a first run, as in the README): group the faces by character, as --group-unknown does.
    # A --gallery given that holds none is a typo, said by open_recognizer.
    grouping = args.group_unknown or not (args.index or args.gallery or Gallery.exists(gallery_path(args)))
    if args.similarity is not None and not grouping:
        raise UsageError("sort: --similarity goes with --group-unknown")
    rec = None
    if args.index:  # an index named the faces already
        checked = check_folders(args.src, args.dst, args.move, grouping)
    else:
        rec = open_recognizer(args, create=grouping)  # grouping needs no gallery
        checked = check_folders(args.src, args.dst, args.move, grouping)  # before the network loads
        if not grouping:
            _warn_if_empty(rec)
        elif not args.group_unknown:
            _say(f"no gallery yet at {rec.path}: grouping the faces by character, as --group-unknown does")
        elif not rec.characters:
            _say(f"no characters in {rec.path}: every face is unknown, and grouped by character")
        if rec.characters or grouping:
            load_embedder(rec, args)
        else:  # an empty gallery names nobody, so no network; faces are still found
            check_models(args, backbone=False)
    try:
        summary = sort_folder(rec, args.src, args.dst, move=args.move, dry_run=args.dry_run, faces=args.faces,
                              jobs=args.jobs, progress=_progress(args),
                              log=tqdm.write if args.dry_run or args.verbose else None,
                              group_unknown=grouping, similarity=args.similarity, index=args.index, checked=checked)
    except KeyboardInterrupt:
        _say("interrupted; run the same command again to carry on, "
             f"or 'animeface sort --undo {args.dst}' to reverse it")
        return EXIT_INTERRUPTED
    groups = sorted(f for f in summary.folders if f.startswith(UNKNOWN + "/"))
    hint = ""
    if groups:
        if not summary.dry_run:
            hint = (f"name a group: animeface enroll NAME {Path(args.dst) / groups[0]}/ ; then "
                    f"'animeface sort --undo {args.dst}' and sort again to file its pictures under NAME")
    elif grouping and summary.folders.get(UNKNOWN):
        hint = (f"no group formed: a group needs {MIN_GROUP} or more unknown faces alike, so the unknown pictures "
                f"are in {UNKNOWN}/ as they are")
    if args.json:
        print(json.dumps({**summary.to_dict(), "hint": hint or None}, ensure_ascii=False))
    else:
        print(summary)
        if hint:
            print(hint)
    return _status(summary.files - len(summary.left), len(summary.left))


def cmd_index(args) -> int:
    from importlib.util import find_spec

    from .gallery import Gallery

    if args.part_size is not None and args.part_size < 1:
        raise UsageError("index: --part-size must be at least 1")
    if not (find_spec("ray") and find_spec("pyarrow")):
        raise AnimefaceError("index needs Ray and pyarrow: pip install 'animeface-recognition[index]'")
    if args.gallery:
        check_gallery(args)
    elif not Gallery.exists(gallery_path(args)):
        _say(f"no gallery at {gallery_path(args)}: faces are not named, only their vectors are written")
    from .index import PART_PICTURES, index_pictures

    if not args.quiet:
        _say("loading the networks and starting Ray ...")
    try:
        summary = index_pictures(args.paths, args.out, gallery=args.gallery, backbone=args.backbone,
                                 projection=args.projection, cascade=args.cascade, detector=args.detector,
                                 stranger_refusal=args.refuse_strangers, faces=args.faces, address=args.address,
                                 part_pictures=args.part_size or PART_PICTURES, progress=_progress(args),
                                 log=_failed)
    except KeyboardInterrupt:
        _say("interrupted; the parts written are kept: run the same command again to carry on")
        return EXIT_INTERRUPTED
    print(summary)
    return _status(summary.pictures + summary.already - len(summary.failed), len(summary.failed))


def cmd_list(args) -> int:
    rec = open_recognizer(args)
    if args.json:
        print(json.dumps({"gallery": str(rec.path), "characters": rec.characters}, ensure_ascii=False))
        return EXIT_OK
    if not rec.characters and not args.quiet:
        print(f"gallery {rec.path} is empty")
    for name, count in rec.characters.items():
        print(name if args.quiet else f"{name}\t{count}")
    return EXIT_OK


def cmd_forget(args) -> int:
    """A character, or its faces of the pictures given; a picture not enrolled under that name is
    said on stderr (with the names it is enrolled under) and counts as failed."""
    from .errors import ImageError

    rec = open_recognizer(args)
    try:
        files = [path for path, _ in _pictures(args.pictures)]
        names_of = {path: rec.names_of(path) for path in files}
        removed = rec.forget(args.name, files if args.pictures else None)
    except (KeyError, ImageError) as exc:
        _say(f"error: {exc.args[0]}")
        return EXIT_ERROR
    missing = [path for path in files if args.name not in names_of[path]]
    for path in missing:
        elsewhere = f" (enrolled as {', '.join(names_of[path])})" if names_of[path] else ""
        _failed(f"{path}: not enrolled as {args.name}{elsewhere}")
    if removed:
        rec.save()
    if args.json:
        print(json.dumps({"forgot": args.name, "faces": removed, "gallery": str(rec.path),
                          **({"pictures": [str(p) for p in files if p not in missing],
                              "not_enrolled": [{"path": str(p), "enrolled_as": names_of[p]} for p in missing]}
                             if args.pictures else {})}, ensure_ascii=False))
    elif not args.quiet and removed:
        print(f"forgot {removed} face(s) of {args.name}" if args.pictures else f"forgot {args.name} ({removed} face(s))")
    return _status(len(files) - len(missing), len(missing)) if args.pictures else EXIT_OK


def cmd_serve(args) -> int:
    """Serve the web page and its API until Ctrl+C; the socket is bound first, so a port in use is
    said at once, before the network loads."""
    if not 0 <= args.port <= 65535:
        raise UsageError("serve: --port must be from 0 to 65535")
    from importlib.util import find_spec

    if not (find_spec("fastapi") and find_spec("uvicorn") and (find_spec("python_multipart") or find_spec("multipart"))):
        raise AnimefaceError("serve needs FastAPI, uvicorn and python-multipart: "
                             "pip install 'animeface-recognition[web]'")
    from . import serve

    sock = serve.listen(args.host, args.port)
    with sock:
        rec = open_recognizer(args, create=True)
        load_embedder(rec, args)
        token, login = serve.new_token(), serve.new_token()
        app = serve.create_app(rec, token, login, args.host)
        host, port = sock.getsockname()[:2]
        if host not in ("127.0.0.1", "::1"):
            _say(f"warning: listening on {args.host}: the page travels unencrypted, so anyone who can watch "
                 "the network can take its cookie or token and change the gallery")
        shown = "127.0.0.1" if args.host in serve.WILDCARD_HOSTS else f"[{host}]" if ":" in host else host
        print(f"animeface: serving the gallery {rec.path}; open http://{shown}:{port}{serve.LOGIN_PATH}?key={login} "
              "in your browser (it works once, and signs that browser in; Ctrl+C to stop)", flush=True)
        print(f"animeface: API token, for scripts (the {serve.TOKEN_HEADER} header): {token}", flush=True)
        serve.run(app, sock)
    return EXIT_OK


def cmd_train(args) -> int:
    import shlex

    from .train import check_output, losses, train

    words = ["animeface", "train", *args.roots, "--out", args.out, "--name", args.name, "--seed", str(args.seed)]
    command = " ".join(shlex.quote(w) for w in words + (["--backbone", args.backbone] if args.backbone else []))
    try:
        check_output(args.out, args.name)
    except ValueError as exc:
        raise UsageError(f"train: --name: {exc}") from None
    check_models(args, detector=False)
    path = train(args.roots, args.out, name=args.name, backbone=args.backbone, seed=args.seed,
                 progress=_progress(args), command=command)
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    top1 = card["left_out_characters_top1"]
    if args.json:
        print(json.dumps({"projection": str(path), "card": str(path.with_suffix(".json")), "left_out_top1": top1,
                          "trained_loses_at": losses(top1)},
                         ensure_ascii=False))
    else:
        print(f"wrote {path} and its card {path.with_suffix('.json')}")
        print("characters left out of the fit, named right (top-1), untrained -> trained:")
        for k, before in top1["untrained"].items():
            after = top1["trained"][k]
            print(f"  {k}: " + (f"{before:.1%} -> {after:.1%}" if before is not None and after is not None
                                else "not measured (too few pictures)"))
    if losses(top1):
        worse = "; ".join(f"{k}: {top1['trained'][k]:.1%} against {top1['untrained'][k]:.1%}" for k in losses(top1))
        _say(f"warning: the trained projection names characters it never saw worse than the untrained embedder "
             f"({worse}); keep the shipped projection, or train on more characters")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate, format_report

    if args.plots:  # before the evaluation, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise AnimefaceError("evaluate: --plots needs matplotlib (pip install matplotlib); "
                             "nothing was run") from None
    check_models(args, detector=args.faces != "whole")
    try:
        with quiet.native_stderr_silenced():
            result = evaluate(args.root, shots=args.shots, unknown=args.unknown, repeats=args.repeats, seed=args.seed,
                              faces=args.faces, backbone=args.backbone, cascade=args.cascade,
                              detector=args.detector, stranger_refusal=args.refuse_strangers,
                              progress=_progress(args))
    except ValueError as exc:
        raise UsageError(f"evaluate: {exc}") from None
    if args.plots:
        from .plots import write_plots

        for path in write_plots(result, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    result.pop("records")
    print(json.dumps(result, ensure_ascii=False) if args.json else format_report(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
