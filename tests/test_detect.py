"""Face detection on real pictures with the real cascade from ../shared/data."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import animeface
from animeface.detect import Detector, draw_boxes
from animeface.verifier import WEIGHTS_PATH, Verifier

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
PLAIN = dict(min_neighbors=5, max_side=None, min_side=None, angles=(0,), pad=0, verify=False)
# Pictures that are quick to search and between them hold upright, tilted and edge faces.
LABELLED = [
    "set_a/detect_01.jpg", "set_a/detect_02.jpg", "set_a/detect_03.jpg", "set_a/detect_06.jpg",
    "set_a/sample1.jpg", "set_c/arkel23+animesion/kirito.jfif", "set_c/arkel23+animesion/eren_face.jfif",
    "set_c/arkel23+animesion/rei_bodypillow.jpg",
]


@pytest.fixture(scope="module")
def detector():
    return Detector(CASCADE)


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
    plain = Detector(CASCADE, **PLAIN)
    assert recall(detector, LABELLED) >= recall(plain, LABELLED)


def test_rotated_face_is_found(detector):
    face = cv2.imread(str(SHARED / "illustrations" / "set_a" / "detect_03.jpg"))[:, :, ::-1]
    canvas = np.full((600, 600, 3), 235, np.uint8)
    canvas[150:414, 190:410] = face
    matrix = cv2.getRotationMatrix2D((300, 300), 38, 1.0)
    rotated = cv2.warpAffine(canvas, matrix, (600, 600), borderValue=(235, 235, 235))
    # The face's centre (69 + 42, 41 + 42 inside the picture) after the rotation.
    cx, cy = matrix @ np.array([190 + 111, 150 + 83, 1.0])
    found = detector.detect(rotated)
    assert any(abs(b.x + b.w / 2 - cx) < 30 and abs(b.y + b.h / 2 - cy) < 30 for b in found)
    assert not Detector(CASCADE, **PLAIN).detect(rotated)


def test_verifier_weights_load_without_pickle():
    with np.load(WEIGHTS_PATH, allow_pickle=False) as weights:
        assert {"mean", "scale", "coef", "intercept"} <= set(weights.files)
    gray = cv2.imread(str(SHARED / "faces" / "unlabeled64" / "1.png"), cv2.IMREAD_GRAYSCALE)
    p = Verifier().probabilities(cv2.equalizeHist(gray), [(0, 0, 64, 64)])
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
        Detector(CASCADE, contrasts=("sharpen",))
    with pytest.raises(ValueError, match="scale_factor"):
        Detector(CASCADE, scale_factor=1.0)


def test_draw_boxes_marks_a_copy():
    image = np.full((200, 300, 3), 255, np.uint8)
    out = draw_boxes(image, [animeface.Box(50, 40, 80, 80, 0.9)])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 255).all() and (out != 255).any()
    labelled = draw_boxes(image, [(10, 10, 50, 50)], labels=["Miku"])
    assert (labelled != 255).any()
