"""Face detection on real pictures with the real cascade from ../shared/data."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import animeface
from animeface.detect import Detector, draw_boxes
from animeface.verifier import WEIGHTS_PATH, Verifier, box_crops

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
PLAIN = dict(scale_factor=1.1, min_neighbors=5, resolution=1.0, min_side=None, max_side=None, angles=(0,), pad=0, verify=False)
# Pictures that are quick to search and between them hold upright, tilted and edge faces.
LABELLED = [
    "set_a/detect_01.jpg", "set_a/detect_02.jpg", "set_a/detect_03.jpg", "set_a/detect_06.jpg",
    "set_a/sample1.jpg", "set_c/arkel23+animesion/kirito.jfif", "set_c/arkel23+animesion/eren_face.jfif",
    "set_c/arkel23+animesion/rei_bodypillow.jpg",
]


@pytest.fixture(scope="module")
def detector():
    return Detector("cascade", cascade=CASCADE)


def iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def recall(det, names):
    truth = json.loads((ROOT / "tests" / "face_boxes.json").read_text())["boxes"]
    hits = total = 0
    for name in names:
        found = det.detect(SHARED / "illustrations" / name)
        hits += sum(any(iou(f, t) >= 0.5 for f in found) for t in truth[name])
        total += len(truth[name])
    return hits / total


def test_boxes_unpack_and_carry_scores(detector):
    boxes = detector.detect(SHARED / "illustrations" / "set_a" / "detect_01.jpg")
    assert boxes
    for box in boxes:
        x, y, w, h = box
        assert w > 0 and h > 0 and 0 <= x and 0 <= y
        assert 0.0 <= box.score <= 1.0
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)


def test_default_recall_at_least_plain_cascade(detector):
    plain = Detector("cascade", cascade=CASCADE, **PLAIN)
    assert recall(detector, LABELLED) >= recall(plain, LABELLED)


def face_on_canvas(zoom, height, width, top, left):
    """A face picture enlarged by zoom and pasted on a plain canvas, and the face box
    the plain cascade finds in it."""
    face = cv2.imread(str(SHARED / "illustrations" / "set_a" / "detect_03.jpg"))[:, :, ::-1]
    face = cv2.resize(face, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), 220, np.uint8)
    canvas[top : top + face.shape[0], left : left + face.shape[1]] = face
    upright = Detector("cascade", cascade=CASCADE, **PLAIN).detect(canvas)
    assert len(upright) == 1
    return canvas, upright[0]


def test_rotated_face_is_found(detector):
    # A tilted head in a 1000 px picture, big enough (at the working size) for the rotated passes.
    canvas, upright = face_on_canvas(2, 1000, 1000, 200, 300)
    matrix = cv2.getRotationMatrix2D((500, 500), 38, 1.0)
    rotated = cv2.warpAffine(canvas, matrix, (1000, 1000), borderValue=(220, 220, 220))
    cx, cy = matrix @ np.array([upright.x + upright.w / 2, upright.y + upright.h / 2, 1.0])
    found = detector.detect(rotated)
    assert any(abs(b.x + b.w / 2 - cx) < 0.2 * b.w and abs(b.y + b.h / 2 - cy) < 0.2 * b.h for b in found)
    assert not Detector("cascade", cascade=CASCADE, **PLAIN).detect(rotated)


def test_verifier_weights_load_without_pickle():
    with np.load(WEIGHTS_PATH, allow_pickle=False) as weights:
        assert {"mean", "scale", "coef", "intercept"} <= set(weights.files)
    gray = cv2.imread(str(SHARED / "faces" / "unlabeled64" / "1.png"), cv2.IMREAD_GRAYSCALE)
    p = Verifier().probabilities(gray, [(0, 0, 64, 64)])
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0


def test_bad_input_raises_image_error(detector, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(animeface.ImageError):
        detector.detect(broken)
    with pytest.raises(animeface.ImageError):
        detector.detect(np.zeros((0, 5, 3), np.uint8))


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="contrasts"):
        Detector("cascade", cascade=CASCADE, contrasts=("sharpen",))
    with pytest.raises(ValueError, match="scale_factor"):
        Detector("cascade", cascade=CASCADE, scale_factor=1.0)


def test_draw_boxes_marks_a_copy():
    image = np.full((200, 300, 3), 255, np.uint8)
    out = draw_boxes(image, [animeface.Box(50, 40, 80, 80, 0.9)])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 255).all() and (out != 255).any()
    labelled = draw_boxes(image, [(10, 10, 50, 50)], labels=["Miku"])
    assert (labelled != 255).any()


def test_a_turned_box_is_drawn_turned():
    """A face found turned 45 degrees is drawn as the diamond it lies in: its square's corners are
    left bare and the middles of its sides are the diamond's corners."""
    image = np.full((300, 300, 3), 255, np.uint8)
    out = draw_boxes(image, [animeface.Box(100, 100, 100, 100, 0.9, angle=45.0)], labels=[""])
    inked = (out != 255).any(axis=2)
    assert not inked[197:200, 197:200].any(), "the upright square's bottom-right corner is not drawn"
    centre, reach = 150, round(50 * 2 ** 0.5)
    assert inked[centre, centre + reach - 3:centre + reach + 3].any(), "the diamond's right corner is drawn"


def test_faces_that_fill_the_frame_are_found(detector):
    # Close-up face crops, where the face runs to the picture's edges: the plain cascade's window never fits.
    crops = sorted((SHARED / "faces" / "holoen20").glob("*/*"))[::120]

    def found(det):
        hits = 0
        for path in crops:
            height, width = cv2.imread(str(path)).shape[:2]
            hits += any(b.x <= width / 2 <= b.x + b.w and b.y <= height / 2 <= b.y + b.h for b in det.detect(path))
        return hits

    default_hits = found(detector)
    assert default_hits >= len(crops) / 2
    assert default_hits > found(Detector("cascade", cascade=CASCADE, **PLAIN))


def test_small_face_in_a_huge_picture_is_found(detector):
    # A 2400 px picture is searched shrunk to 1280 px; a face 4.5% of its width must survive that.
    canvas, truth = face_on_canvas(1.3, 1600, 2400, 1200, 1700)
    assert any(iou(b, truth) >= 0.5 for b in detector.detect(canvas))


def test_verifier_sees_the_grey_border_beyond_the_edge():
    gray = np.full((100, 100), 7, np.uint8)
    (crop,) = box_crops(gray, [(-20, 80, 40, 40)])
    assert crop.shape == (40, 40)
    assert (crop[:20, 20:] == 7).all() and (crop[:, :20] == 128).all() and (crop[20:, :] == 128).all()
