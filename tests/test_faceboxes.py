"""The learned detector: its weights read without running pickled code, found faces on real
pictures, the cascade still selectable, and clear errors for missing or damaged weights."""

import io
import json
import os
import pickle
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

import animeface
from animeface import models
from animeface.crop import crop_face
from animeface.detect import Detector
from animeface.faceboxes import FRAMINGS, turned
from animeface.io import load_image
from animeface.pth import read_state_dict
from conftest import CASCADE, FACEBOXES, RANDOM_BACKBONE, SHARED

ROOT = Path(__file__).resolve().parents[1]
TRUTH = json.loads((ROOT / "tests" / "face_boxes.json").read_text())["boxes"]
#: Where the state dict's pickle starts: after the magic number, protocol and system-information pickles.
HEADER = 137


def iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


# -- the safe weight reader ---------------------------------------------------------------------


def test_the_published_weights_read_as_plain_arrays():
    state = read_state_dict(FACEBOXES)
    assert state["conv1.conv.weight"].shape == (24, 3, 7, 7)
    assert state["conv1.conv.weight"].dtype == np.float32
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")


def hostile_variants(tmp_path):
    real = FACEBOXES.read_bytes()
    marker = tmp_path / "pwned"
    runs_code = (b"\x80\x02cos\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little")
                 + f"touch {marker}".encode() + b"\x85R.")
    return marker, {
        "runs code": real[:HEADER] + runs_code,
        "names another class": real[:HEADER] + b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.",
        "truncated": real[: len(real) - 1000],
        "trailing bytes": real + b"\x00" * 16,
        "a tensor past its storage": real.replace(b"K\x18K\x03K\x07K\x07t", b"K\x18K\x03K\x07K\x08t", 1),
        "no magic number": b"PK\x03\x04" + real[4:],
        "not a pickle": b"garbage" * 100,
        "empty": b"",
    }


def test_hostile_or_damaged_weight_files_are_one_clear_error_and_run_nothing(tmp_path):
    marker, variants = hostile_variants(tmp_path)
    for what, content in variants.items():
        path = tmp_path / f"{what}.pth"
        path.write_bytes(content)
        with pytest.raises(animeface.ModelError) as err:
            read_state_dict(path, "ANIMEFACE_DETECTOR")
        assert str(path) in str(err.value) and "ANIMEFACE_DETECTOR" in str(err.value), what
        assert not marker.exists(), f"{what}: pickled code ran"


def test_a_fifo_as_weights_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    with pytest.raises(animeface.ModelError, match="FIFO"):
        read_state_dict(fifo)


def test_weights_of_another_network_are_refused_naming_the_variable(tmp_path, monkeypatch):
    renamed = tmp_path / "other.pth"
    renamed.write_bytes(FACEBOXES.read_bytes().replace(b"conv1.conv.weight", b"conv1.conv.weighx", 1))
    monkeypatch.setenv("ANIMEFACE_DETECTOR", str(renamed))
    with pytest.raises(animeface.ModelError, match="ANIMEFACE_DETECTOR"):
        Detector()


# -- finding faces on real pictures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def learned():
    return Detector(weights=FACEBOXES, cascade=CASCADE)


@pytest.fixture(scope="module")
def cascade():
    return Detector("cascade", cascade=CASCADE)


def tally(detector):
    found = false = 0
    for name, truth in TRUTH.items():
        boxes = detector.detect(SHARED / "illustrations" / name)
        assert all(0.0 <= b.score <= 1.0 for b in boxes)
        assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True), "best score first"
        found += sum(any(iou(b, t) >= 0.3 for b in boxes) for t in truth)
        false += sum(not any(iou(b, t) >= 0.3 for t in truth) for b in boxes)
    return found, false


def test_learned_detector_finds_more_labelled_faces_with_no_more_false_boxes(learned, cascade):
    found, false = tally(learned)
    cascade_found, cascade_false = tally(cascade)
    assert found >= cascade_found and false <= cascade_false, (found, false, cascade_found, cascade_false)


@pytest.mark.parametrize("name", ["set_a/detect_01.jpg", "set_a/detect_04.jpg", "set_b/test_1.jpg",
                                  "set_c/arkel23+animesion/dva.jpg", "set_c/arkel23+animesion/rei_bodypillow.jpg"])
def test_every_labelled_face_is_found(learned, name):
    """Laughing and closed eyes (detect_01), a row of faces (detect_04), thirteen faces in a grid
    (test_1), a face that fills a tall picture, a small picture."""
    boxes = learned.detect(SHARED / "illustrations" / name)
    for truth in TRUTH[name]:
        assert any(iou(b, truth) >= 0.3 for b in boxes), (truth, boxes)


@pytest.mark.parametrize("name", ["set_a/detect_06.jpg", "set_a/detect_07.jpg", "set_a/detect_08.jpg"])
def test_a_face_with_its_eyes_covered_is_found(learned, name):
    """A blindfold or sunglasses, drawn as a dark band over the eyes: the verifier reads eyes, so it
    must not veto the picture's best face when the network gives it even odds or more."""
    rgb = load_image(SHARED / "illustrations" / name).copy()
    (x, y, w, h), = TRUTH[name]
    rgb[int(y + 0.38 * h):int(y + 0.62 * h), max(x, 0):x + w] = 20
    boxes = learned.detect(rgb)
    assert any(iou(b, TRUTH[name][0]) >= 0.3 for b in boxes), boxes


def test_a_lying_head_is_found_and_cut_upright(learned):
    """The picture turned a quarter: only the turned framing finds the face, its box carries the turn
    back, and the crop cut with it matches the upright face's crop far better than one cut without."""
    name = "set_a/detect_06.jpg"
    rgb = load_image(SHARED / "illustrations" / name)
    (x, y, w, h), = TRUTH[name]
    lying, matrix = turned(rgb, 90)
    cx, cy = matrix @ (x + w / 2, y + h / 2, 1)

    def on_face(detector):
        boxes = detector.detect(lying)
        return [b for b in boxes if abs(b.x + b.w / 2 - cx) < w / 2 and abs(b.y + b.h / 2 - cy) < h / 2]

    assert not on_face(Detector(weights=FACEBOXES, cascade=CASCADE, framings=[f for f in FRAMINGS if f != "turned"]))
    box, = on_face(learned)
    assert box.angle == -90
    upright = crop_face(rgb, TRUTH[name][0], 128).astype(float)
    cut_upright = np.abs(crop_face(lying, box, 128) - upright).mean()
    cut_as_is = np.abs(crop_face(lying, tuple(box), 128) - upright).mean()
    assert cut_upright < 0.5 * cut_as_is, (cut_upright, cut_as_is)


def test_a_lying_head_taught_by_its_box_and_angle_is_cut_as_detected(tmp_path):
    """The web page teaches a face by the box and angle identify gave: the same crop, so the same
    vector, as enrolling the picture; without the angle it would be another."""
    path = tmp_path / "lying.png"
    lying, _ = turned(load_image(SHARED / "illustrations" / "set_a" / "detect_06.jpg"), 90)
    assert cv2.imwrite(str(path), lying[..., ::-1])
    rec = animeface.Recognizer(tmp_path / "gallery", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    report = rec.enroll("detected", [path])
    face, = rec.identify(path)
    assert face.box.angle == -90 and report.used[0]["box"] == list(face.box)
    vectors = {"detected": rec.gallery.vectors[0].copy()}
    for name, angle in (("unturned", 0.0), ("taught", face.box.angle)):  # one face, one name: each in turn
        rec.forget(next(iter(rec.characters)))
        taught = rec.enroll_face(name, path, list(face.box), angle=angle)
        vectors[name] = rec.gallery.vectors[0].copy()
    assert taught["angle"] == -90
    np.testing.assert_allclose(vectors["taught"], vectors["detected"], atol=1e-5)
    assert not np.allclose(vectors["unturned"], vectors["detected"], atol=1e-3)
    rec.save()
    reopened = animeface.Recognizer.open(tmp_path / "gallery", backbone=RANDOM_BACKBONE, cascade=CASCADE,
                                         progress=False)
    assert [e.get("angle") for e in reopened.gallery.entries] == [-90]


def test_a_picture_with_no_face_gets_no_box(learned):
    assert learned.detect(SHARED / "illustrations" / "set_c" / "arkel23+animesion" / "muffin.jpg") == []


def test_a_face_that_fills_the_picture_is_found(learned):
    crop = sorted((SHARED / "faces" / "holoen20" / "gura").iterdir())[0]
    boxes = learned.detect(crop)
    assert boxes and boxes[0].x < 128 < boxes[0].x + boxes[0].w


def test_the_best_box_below_the_threshold_is_kept_alone():
    """Close-ups shown to the square pass alone score below 0.5 when the face overflows its anchors:
    the floor keeps the best box, one per picture, on the face."""
    crops = [load_image(p) for p in sorted((SHARED / "faces" / "holoen20").glob("*/*"))[::120]]

    def centred(detector):
        boxes = [detector.detect(crop) for crop in crops]
        assert all(len(b) <= 1 for b, crop in zip(boxes, crops) if not any(x.score >= 0.5 for x in b))
        return sum(any(x.x <= 128 <= x.x + x.w and x.y <= 128 <= x.y + x.h for x in b) for b in boxes)

    square = dict(weights=FACEBOXES, framings=("square",), second_opinion=None)
    assert centred(Detector(**square)) > centred(Detector(**square, floor=0.5))


# -- auto faces: a full picture with no face is not one face ------------------------------------------


def test_a_full_picture_with_no_face_is_not_taken_whole(gallery_copy):
    rec = animeface.Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, progress=False)
    muffin = SHARED / "illustrations" / "set_c" / "arkel23+animesion" / "muffin.jpg"
    assert rec.identify(muffin) == []
    report = rec.enroll("gura", [muffin])
    assert not report.used and "no face found" in report.skipped[0][1]


# -- choosing the detector, and its weights -------------------------------------------------------------


def test_detect_command_takes_either_detector(tmp_path):
    """Both detectors from the command line; and OpenVINO's usage statistics stay off: nothing is
    written in the home folder (OpenVINO's import writes ~/intel/ and sends an event by default)."""
    picture = SHARED / "illustrations" / "set_a" / "detect_01.jpg"
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "ANIMEFACE_CASCADE": str(CASCADE), "ANIMEFACE_DETECTOR": str(FACEBOXES),
           "HOME": str(home), "ANIMEFACE_CACHE": str(models.cache_dir())}
    counts = {}
    for kind in ("cascade", "faceboxes"):
        out = subprocess.run([sys.executable, "-m", "animeface", "detect", str(picture), "--detector", kind,
                              "--out", str(tmp_path / kind), "-q"], env=env, capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        counts[kind] = int(out.stdout.split(": ")[1].split()[0])
        assert (tmp_path / kind / "detect_01.jpg").is_file()
    assert counts == {"cascade": len(TRUTH["set_a/detect_01.jpg"]), "faceboxes": len(TRUTH["set_a/detect_01.jpg"])}
    assert list(home.iterdir()) == []


def test_missing_weights_name_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_DETECTOR", str(tmp_path / "missing.pth"))
    with pytest.raises(animeface.ModelError, match="ANIMEFACE_DETECTOR"):
        Detector()
    env = {**os.environ, "ANIMEFACE_DETECTOR": str(tmp_path / "missing.pth")}
    out = subprocess.run([sys.executable, "-m", "animeface", "detect", str(CASCADE), "--out", str(tmp_path / "o")],
                         env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and "ANIMEFACE_DETECTOR" in out.stderr and "Traceback" not in out.stderr


def test_corrupt_weights_name_the_variable(tmp_path, monkeypatch):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(FACEBOXES.read_bytes()[:5000])
    monkeypatch.setenv("ANIMEFACE_DETECTOR", str(bad))
    with pytest.raises(animeface.ModelError, match="ANIMEFACE_DETECTOR"):
        Detector()


def test_downloaded_weights_take_the_same_path(monkeypatch, tmp_path):
    """With no local copy, the weights are fetched from the manifest's address, verified, cached and used."""
    monkeypatch.delenv("ANIMEFACE_DETECTOR")
    monkeypatch.setenv("ANIMEFACE_CACHE", str(tmp_path / "cache"))
    entry = models.manifest()["faceboxes_anime"]
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        return io.BytesIO(FACEBOXES.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    boxes = Detector(cascade=CASCADE).detect(SHARED / "illustrations" / "set_a" / "detect_02.jpg")
    assert asked == [entry.url] and len(boxes) == 1
    assert (tmp_path / "cache" / entry.filename).read_bytes() == FACEBOXES.read_bytes()
