"""Enroll one character per subfolder: ROOT/gura/*.jpg becomes the character "gura".

    python examples/enroll_from_folders.py ../shared/data/faces/holoen20 --gallery /tmp/try-gallery --faces whole --limit 10

Pictures can be whole illustrations (the largest face is used) or face crops
(--faces whole). The gallery named by --gallery is saved at the end (an explicit
folder, so that trying the example never touches your real default gallery).
"""

import argparse
from pathlib import Path

import animeface
from animeface.io import iter_image_files


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="one subfolder per character")
    parser.add_argument("--gallery", required=True, help="gallery folder (made if missing)")
    parser.add_argument("--faces", choices=["auto", "detect", "whole"], default="auto")
    parser.add_argument("--limit", type=int, help="use at most this many pictures per character")
    args = parser.parse_args()

    rec = animeface.Recognizer(args.gallery)
    for folder in sorted(p for p in args.root.iterdir() if p.is_dir()):
        pictures = iter_image_files([folder])[:args.limit]
        print(rec.enroll(folder.name, pictures, faces=args.faces))
    rec.save()
    print(f"saved {rec.path}: " + ", ".join(f"{name} ({n})" for name, n in rec.characters.items()))


if __name__ == "__main__":
    main()
