"""The recognizer through its public API: enroll, identify, unknowns, forget, save and load."""

import json

import numpy as np
import pytest

import animeface
from animeface import Recognizer

from conftest import CASCADE, CHARACTERS, ENROLL_SHOTS, RANDOM_BACKBONE, TEST_SHOTS, crops

STRANGERS = ("mumei", "ina")


def open_copy(path, **kw):
    return Recognizer.open(path, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False, **kw)


def held_out():
    return [(name, p) for name in CHARACTERS for p in crops(name, ENROLL_SHOTS, TEST_SHOTS)]


def test_enroll_reports_what_it_used(gallery_copy):
    rec = open_copy(gallery_copy)
    assert rec.characters == {name: ENROLL_SHOTS for name in CHARACTERS}
    text = gallery_copy / "notes.txt"
    text.write_text("not a picture")
    report = rec.enroll("gura", crops("gura", 20, 2) + [text], faces="whole")
    assert [u["source"] for u in report.used] == [str(p) for p in crops("gura", 20, 2)]
    assert report.failed == [(str(text), report.failed[0][1])] and "not a readable image" in report.failed[0][1]
    assert report.skipped == []
    assert rec.characters["gura"] == ENROLL_SHOTS + 2


def test_enrolling_the_same_file_twice_adds_it_once(gallery_copy):
    rec = open_copy(gallery_copy)
    again = crops("calli", 0, 2)
    report = rec.enroll("calli", again + [again[0]], faces="whole")
    assert report.used == []
    assert [why for _, why in report.skipped] == ["already enrolled as calli"] * 3
    assert rec.characters["calli"] == ENROLL_SHOTS


def test_a_face_enrolled_under_one_name_is_not_enrolled_under_another(gallery_copy):
    # a folder enrolled again under its folder's name must not give its faces a second character
    rec = open_copy(gallery_copy)
    again = crops("calli", 0, 2)
    report = rec.enroll("Mori Calliope", again + crops("calli", 20, 1), faces="whole")
    assert [why for _, why in report.skipped] == ["its face is enrolled as calli"] * 2
    assert [u["source"] for u in report.used] == [str(crops("calli", 20, 1)[0])]
    assert rec.characters["calli"] == ENROLL_SHOTS and rec.characters["Mori Calliope"] == 1
    with pytest.raises(ValueError, match="already enrolled as calli; forget it there first"):
        rec.enroll_face("Mori Calliope", again[0])
    assert rec.forget("calli", again) == 2 and rec.characters["calli"] == ENROLL_SHOTS - 2
    assert rec.enroll("Mori Calliope", again, faces="whole").skipped == []
    assert rec.characters["Mori Calliope"] == 3


def test_the_same_face_framed_otherwise_is_still_the_same_face(gallery_copy, shared_data):
    # a looser or tighter box, or the crop it came from taken whole, frames the face already enrolled
    rec = open_copy(gallery_copy)
    scene = shared_data / "illustrations" / "set_b" / "test_2.jpg"
    entry = rec.enroll_face("Alice", scene, box=[1318, 228, 430, 429])
    for box in ([1189, 98, 688, 688], [1400, 300, 250, 250]):
        with pytest.raises(ValueError, match="already enrolled as Alice"):
            rec.enroll_face("Dave", scene, box=box)
    other_face = rec.enroll_face("Bob", scene, box=[100, 100, 300, 300])  # another place: another face
    assert other_face["label"] == "Bob" and entry["label"] == "Alice"


def test_held_out_faces_are_mostly_named_right(gallery_copy):
    # random weights cannot tell strangers apart: refuse only half of them, so that names come through
    rec = open_copy(gallery_copy, stranger_refusal=0.5)
    results = rec.identify_batch([p for _, p in held_out()], faces="whole")
    labels = [faces[0].label for faces in results]
    truth = [name for name, _ in held_out()]
    correct = sum(label == name for label, name in zip(labels, truth))
    assert correct / len(truth) >= 0.5, f"{correct}/{len(truth)} right (chance is 1/{len(CHARACTERS)})"
    for faces in results:
        face = faces[0]
        assert 0.0 <= face.score <= 1.0
        names = [n for n, _ in face.candidates]
        assert set(names) == set(CHARACTERS)
        assert [s for _, s in face.candidates] == sorted((s for _, s in face.candidates), reverse=True)
        if face.label is not None:
            assert face.label == names[0]


def test_the_stranger_refusal_knob_trades_names_for_unknowns(gallery_copy):
    probe = [p for _, p in held_out()] + [p for name in STRANGERS for p in crops(name, 0, TEST_SHOTS)]
    named = {}
    for refusal in (0.3, 0.95, 0.9999):
        rec = open_copy(gallery_copy, stranger_refusal=refusal)
        assert rec.calibration.source == "calibrated"
        named[refusal] = sum(r[0].label is not None for r in rec.identify_batch(probe, faces="whole"))
    assert named[0.3] >= named[0.95] >= named[0.9999] and named[0.3] > named[0.9999]
    for bad in (0, 1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="stranger_refusal"):
            open_copy(gallery_copy, stranger_refusal=bad)


def test_save_and_load_give_identical_answers(gallery_copy, tmp_path):
    rec = open_copy(gallery_copy)
    rec.enroll("mumei", crops("mumei", 0, 3), faces="whole")
    moved = tmp_path / "elsewhere"
    rec.path = moved
    rec.save()
    again = open_copy(moved)
    assert again.characters == rec.characters and again.calibration == rec.calibration
    probe = [p for _, p in held_out()][:6] + crops("ina", 0, 2)
    for a, b in zip(rec.identify_batch(probe, faces="whole"), again.identify_batch(probe, faces="whole")):
        assert [(f.label, round(f.score, 5), tuple(f.box)) for f in a] == \
               [(f.label, round(f.score, 5), tuple(f.box)) for f in b]


def test_saved_gallery_has_no_pickle_and_records_its_backbone(gallery_copy):
    description = json.loads((gallery_copy / "gallery.json").read_text())
    assert description["backbone_id"] == RANDOM_BACKBONE
    assert {e["label"] for e in description["entries"]} == set(CHARACTERS)
    assert all(len(e["sha256"]) == 64 and e["source"] for e in description["entries"])
    np.load(gallery_copy / "vectors.npy", allow_pickle=False)
    np.load(gallery_copy / "head.npz", allow_pickle=False)


def test_opening_with_another_backbone_is_a_clear_error(gallery_copy):
    with pytest.raises(animeface.BackboneMismatchError, match="random-init:0.*random-init:1"):
        Recognizer.open(gallery_copy, backbone="random-init:1")
    with pytest.raises(animeface.BackboneMismatchError):
        Recognizer.open(gallery_copy)  # the default backbone is ImageNet, never random


def test_opening_a_missing_or_damaged_gallery(tmp_path, gallery_copy):
    with pytest.raises(animeface.GalleryError, match="no gallery here"):
        Recognizer.open(tmp_path / "nothing")
    (gallery_copy / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(animeface.GalleryError, match="damaged"):
        open_copy(gallery_copy)


def test_save_is_atomic_and_keeps_the_old_gallery_on_failure(gallery_copy, monkeypatch):
    rec = open_copy(gallery_copy)
    before = (gallery_copy / "gallery.json").read_text()
    rec.forget("gura")
    monkeypatch.setattr(np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(animeface.GalleryError, match="the gallery could not be saved .disk full.; the gallery saved "
                                                     "before is unchanged"):
        rec.save()
    assert (gallery_copy / "gallery.json").read_text() == before
    assert sorted(p.name for p in gallery_copy.parent.iterdir()) == ["gallery"], "no temporary folder left"


def test_forget_removes_a_character(gallery_copy):
    rec = open_copy(gallery_copy)
    assert rec.forget("kiara") == ENROLL_SHOTS
    assert "kiara" not in rec.characters
    faces = rec.identify_batch(crops("kiara", ENROLL_SHOTS, 2), faces="whole")
    assert all(f[0].label != "kiara" and "kiara" not in dict(f[0].candidates) for f in faces)
    with pytest.raises(KeyError, match="not enrolled"):
        rec.forget("kiara")


def test_one_character_gallery_uses_similarity_alone(tmp_path):
    rec = Recognizer(tmp_path / "solo", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    rec.enroll("gura", crops("gura", 0, 8), faces="whole")
    assert rec.head is None and rec.calibration.source == "fallback"  # random weights: no stranger bank
    own = [r[0] for r in rec.identify_batch(crops("gura", 8, 6), faces="whole")]
    others = [r[0] for r in rec.identify_batch(crops("calli", 0, 3) + crops("fauna", 0, 3), faces="whole")]
    assert sum(f.label == "gura" for f in own) > sum(f.label == "gura" for f in others)
    assert all(f.label in ("gura", None) and f.candidates[0][0] == "gura" for f in own + others)


def test_empty_gallery_calls_every_face_unknown(tmp_path):
    rec = Recognizer(tmp_path / "empty", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    faces = rec.identify(crops("gura", 0, 1)[0], faces="whole")
    assert len(faces) == 1 and faces[0].label is None


def test_face_modes_on_a_full_illustration(shared_data, gallery_copy):
    rec = open_copy(gallery_copy)
    picture = shared_data / "illustrations" / "set_b" / "test_1.jpg"
    detected = rec.identify(picture, faces="detect")
    assert detected and all(len(tuple(f.box)) == 4 for f in detected)
    whole = rec.identify(picture, faces="whole")
    assert len(whole) == 1 and tuple(whole[0].box)[:2] == (0, 0)
    blank = np.full((200, 200, 3), 255, np.uint8)
    assert rec.identify(blank, faces="detect") == []
    assert len(rec.identify(blank, faces="auto")) == 1
    with pytest.raises(ValueError, match="faces must be one of"):
        rec.identify(picture, faces="everything")


def test_enroll_from_full_pictures_finds_the_face(tmp_path, shared_data):
    rec = Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    blank = np.full((120, 120, 3), 255, np.uint8)
    report = rec.enroll("someone", [shared_data / "illustrations" / "set_b" / "test_1.jpg", blank], faces="detect")
    assert len(report.used) == 1 and report.used[0]["faces_found"] >= 1
    assert "no face found" in report.skipped[0][1]


def test_character_names_must_be_safe_folder_names(tmp_path):
    rec = Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    for bad in ("", "a/b", "..", "_unknown", "x\0y", "a\u2028b", "a\u2029b", "a\x85b", "a\x9bb"):
        with pytest.raises(ValueError):
            rec.enroll(bad, crops("gura", 0, 1), faces="whole")


def test_module_level_enroll_and_identify_use_the_default_gallery(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    report = animeface.enroll("gura", [crops("gura", 0, 1)[0].parent], faces="whole")
    assert len(report.used) == len(list(crops("gura", 0, 1000)))
    assert (tmp_path / "home-gallery" / "gallery.json").is_file(), "enroll saves the default gallery"
    faces = animeface.identify(crops("gura", 0, 1)[0], faces="whole")
    assert faces[0].candidates[0][0] == "gura"


def test_detect_faces_finds_faces_in_illustrations(shared_data):
    pictures = sorted((shared_data / "illustrations" / "set_a").glob("*.jpg"))
    found = [animeface.detect_faces(p) for p in pictures]
    assert sum(bool(boxes) for boxes in found) >= 0.75 * len(pictures)
    for boxes in found:
        for box in boxes:
            x, y, w, h = box
            assert w > 0 and h > 0 and 0.0 <= box.score <= 1.0


@pytest.mark.parametrize("rule", [None, 1, 2, 99], ids=["no rule", "rule 1", "rule 2", "a later version's rule"])
def test_a_gallery_calibrated_by_another_version_s_rule_is_calibrated_again_when_opened(gallery_copy, rule):
    fitted = open_copy(gallery_copy).calibration
    description = json.loads((gallery_copy / "gallery.json").read_text())
    assert description["calibration"].pop("rule") == fitted.rule  # the releases before rule 2 wrote none
    if rule is not None:
        description["calibration"]["rule"] = rule
    description["calibration"]["weights"] = [1.0, 1.0, 1.0]
    (gallery_copy / "gallery.json").write_text(json.dumps(description))
    assert open_copy(gallery_copy).calibration == fitted


def test_a_gallery_from_an_earlier_version_says_to_enroll_again(gallery_copy):
    # as the previous release wrote it: format 2, the anime-faces-v1 embedder, similarity and probability thresholds
    description = json.loads((gallery_copy / "gallery.json").read_text())
    description["format_version"] = 2
    description["preprocessing"].update(projection="anime-faces-v1", projection_sha256=(
        "7e64cb6397bc1fa070701c44a33fbf3fc1fd0f0224287af5117afcfacfcb222d"))
    description["thresholds"] = {"similarity": 0.05, "probability": 0.21, "source": "calibrated"}
    del description["calibration"]
    (gallery_copy / "gallery.json").write_text(json.dumps(description))
    with pytest.raises(animeface.GalleryError, match="format 2 is not supported.*enroll its characters again"):
        Recognizer.open(gallery_copy, backbone=RANDOM_BACKBONE)
    description["format_version"] = 1
    (gallery_copy / "gallery.json").write_text(json.dumps(description))
    with pytest.raises(animeface.GalleryError, match="format 1 is not supported.*enroll its characters again"):
        Recognizer.open(gallery_copy, backbone=RANDOM_BACKBONE)
