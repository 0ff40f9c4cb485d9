"""Two writers on one gallery (issue 19): a save takes the gallery's lock, reads what another
writer saved meanwhile and keeps both; `serve` sees other writers' changes before its own."""

import os
import subprocess
import sys

import pytest
from animeface import Recognizer
from animeface.serve import Service

from conftest import CASCADE, CHARACTERS, ENROLL_SHOTS, RANDOM_BACKBONE, ROOT, crops


def open_copy(path):
    return Recognizer.open(path, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)


def test_two_recognizers_saving_one_gallery_keep_both_changes(gallery_copy):
    first, second = open_copy(gallery_copy), open_copy(gallery_copy)
    first.enroll("mumei", crops("mumei", 0, 3), faces="whole")
    second.enroll("ina", crops("ina", 0, 2), faces="whole")
    second.forget("gura")
    first.save()
    second.save()
    expected = {"calli": ENROLL_SHOTS, "kiara": ENROLL_SHOTS, "fauna": ENROLL_SHOTS, "mumei": 3, "ina": 2}
    assert open_copy(gallery_copy).characters == expected
    assert second.characters == expected, "the writer that saved last holds the merged gallery"
    first.forget("mumei")  # a change to a character the other writer had enrolled meanwhile
    first.save()
    assert open_copy(gallery_copy).characters == {k: v for k, v in expected.items() if k != "mumei"}


def test_one_face_enrolled_under_two_names_at_once_keeps_the_first_saved_and_says_so(gallery_copy):
    first, second = open_copy(gallery_copy), open_copy(gallery_copy)
    face = crops("mumei", 0, 1)
    first.enroll("mumei", face, faces="whole")
    second.enroll("Nanashi Mumei", face + crops("mumei", 1, 1), faces="whole")
    first.save()
    with pytest.warns(UserWarning, match=f"{face[0]}: another program enrolled its face as mumei meanwhile; "
                                         "it is not enrolled as Nanashi Mumei"):
        second.save()
    saved = open_copy(gallery_copy).characters
    assert saved["mumei"] == 1 and saved["Nanashi Mumei"] == 1


def test_two_enroll_commands_at_once_both_land(tmp_path):
    gallery = tmp_path / "gallery"
    Recognizer(gallery, backbone=RANDOM_BACKBONE).save()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANIMEFACE_CASCADE": str(CASCADE)}
    runs = [subprocess.Popen([sys.executable, "-m", "animeface", "enroll", name, *map(str, crops(name, 0, 3)),
                              "--faces", "whole", "--gallery", str(gallery), "--backbone", RANDOM_BACKBONE, "-q"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in CHARACTERS[:2]]
    for run in runs:
        out, err = run.communicate()
        assert run.returncode == 0, err
    assert open_copy(gallery).characters == {name: 3 for name in CHARACTERS[:2]}


def test_serve_keeps_and_sees_what_another_writer_saved(gallery_copy):
    service = Service(open_copy(gallery_copy))
    other = open_copy(gallery_copy)
    other.enroll("mumei", crops("mumei", 0, 2), faces="whole")
    other.save()  # a command-line enroll while serve runs
    entry, counts = service.enroll("ina", crops("ina", 0, 1)[0].read_bytes(), "ina.png", None)
    assert counts["mumei"] == 2 and counts["ina"] == 1
    assert open_copy(gallery_copy).characters == {**{n: ENROLL_SHOTS for n in CHARACTERS}, "mumei": 2, "ina": 1}
    other = open_copy(gallery_copy)
    other.enroll("mumei", crops("mumei", 2, 1), faces="whole")
    other.save()
    assert service.forget("mumei") == 3, "serve forgets every face of it, the newest too"
    service.unenroll(entry)
    assert open_copy(gallery_copy).characters == {n: ENROLL_SHOTS for n in CHARACTERS}
