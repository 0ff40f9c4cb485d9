"""Sort a folder of pictures into one folder per character: a minimal `animeface sort`.

    python examples/sort_folder.py ../shared/data/illustrations /tmp/sorted --gallery /tmp/try-gallery

A picture goes into the folder of each known character in it, into _unknown/
when all its faces are unknown and into _noface/ when it has none. Files that
are not pictures are skipped. It copies and never overwrites. `animeface sort`
does the same, faster, and adds --move, a journal, undo and a report.
"""

import argparse
import shutil
from pathlib import Path

import animeface
from animeface.io import iter_image_files


def free_name(path: Path) -> Path:
    """path, or path with -1, -2, ... added, whichever is not taken yet."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--gallery", required=True, help="gallery folder (made by enroll_from_folders.py)")
    args = parser.parse_args()

    rec = animeface.Recognizer.open(args.gallery)
    for path in iter_image_files([args.src]):
        try:
            faces = rec.identify(path)
        except animeface.ImageError as exc:
            print(f"skipped {exc}")
            continue
        names = sorted({face.label for face in faces if face.label})
        for folder in names or (["_unknown"] if faces else ["_noface"]):
            target = free_name(args.dst / folder / path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            print(f"{path} -> {target}")


if __name__ == "__main__":
    main()
