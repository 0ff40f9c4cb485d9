"""Name the faces in a picture and, with --out, save a copy with the boxes and names drawn.

    python examples/identify_image.py ../shared/data/illustrations/set_b/test_2.jpg --gallery /tmp/try-gallery \
        --out /tmp/named.jpg
"""

import argparse

from PIL import Image

import animeface
from animeface.detect import draw_boxes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("picture")
    parser.add_argument("--out", help="where to save an annotated copy (default: none saved)")
    parser.add_argument("--gallery", required=True, help="gallery folder (made by enroll_from_folders.py)")
    args = parser.parse_args()

    rec = animeface.Recognizer.open(args.gallery)
    rgb = animeface.load_image(args.picture)  # decode once, use twice
    faces = rec.identify(rgb)
    for face in faces:
        guess = "" if face.label or not face.candidates else f" (looks most like {face.candidates[0][0]})"
        print(f"{face.label or 'unknown'} {face.score:.2f} at x={face.box.x} y={face.box.y} "
              f"w={face.box.w} h={face.box.h}{guess}")
    if not faces:
        print("no face found")
    if args.out:
        captions = [f"{face.label or 'unknown'} {face.score:.2f}" for face in faces]
        Image.fromarray(draw_boxes(rgb, [face.box for face in faces], captions)).save(args.out)
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
