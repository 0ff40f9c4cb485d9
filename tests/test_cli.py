"""The command line: each verb, its errors, and a start-up that never loads TensorFlow."""

import json
import subprocess
import sys

import pytest

from animeface.cli import main

from conftest import CHARACTERS, RANDOM_BACKBONE, ROOT, crops


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("code", [
    "import animeface",
    "from animeface.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
])
def test_import_and_help_do_not_load_tensorflow(code):
    probe = code + "\nimport sys\nprint('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_help_lists_every_verb():
    out = subprocess.run([sys.executable, "-m", "animeface", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    for verb in ("enroll", "identify", "detect", "list", "forget"):
        assert verb in out


def test_enroll_list_identify_forget(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    gallery = tmp_path / "g"
    code, out, _ = run(capsys, "enroll", "gura", *crops("gura", 0, 4), "--faces", "whole", "--gallery", gallery, "-q")
    assert code == 0 and "gura: 4 face(s) enrolled" in out
    code, out, _ = run(capsys, "enroll", "calli", *crops("calli", 0, 4), "--faces", "whole", "--gallery", gallery, "-q")
    code, out, _ = run(capsys, "list", "--gallery", gallery)
    assert out.split("\n")[:2] == ["gura\t4", "calli\t4"]
    probe = crops("gura", 10, 1)[0]
    code, out, _ = run(capsys, "identify", probe, "--faces", "whole", "--json", "--gallery", gallery, "-q")
    record = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and record["path"] == str(probe)
    assert len(record["faces"]) == 1 and record["faces"][0]["candidates"][0][0] in ("gura", "calli")
    code, out, _ = run(capsys, "forget", "calli", "--gallery", gallery)
    assert code == 0 and "forgot calli" in out
    code, out, err = run(capsys, "forget", "calli", "--gallery", gallery)
    assert code == 1 and "not enrolled" in err
    code, out, _ = run(capsys, "list", "--gallery", gallery)
    assert out.strip() == "gura\t4"


def test_enroll_folders_names_characters_after_subfolders(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    root = tmp_path / "people"
    for name in CHARACTERS[:2]:
        (root / name).mkdir(parents=True)
        for p in crops(name, 0, 3):
            (root / name / p.name).symlink_to(p)
    code, out, _ = run(capsys, "enroll", "--folders", root, "--faces", "whole", "-q")
    assert code == 0
    code, out, _ = run(capsys, "list")
    first, second = sorted(CHARACTERS[:2])
    assert out.split() == [first, "3", second, "3"]


def test_identify_reports_bad_files_and_carries_on(capsys, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    good = shared_data / "illustrations" / "set_b" / "test_2.jpg"
    with pytest.warns(UserWarning, match="empty.jpg"):
        code, out, err = run(capsys, "identify", bad, good, "-q")
    assert code == 0 and str(good) in out and "gallery is empty" in err


def test_backbone_mismatch_is_an_error_message_not_a_traceback(capsys, gallery_copy):
    code, out, err = run(capsys, "list", "--gallery", gallery_copy, "--backbone", "random-init:3")
    assert code == 1 and err.startswith("animeface: error:") and "random-init:0" in err


def test_detect_writes_annotated_copies(capsys, tmp_path, shared_data):
    pictures = sorted((shared_data / "illustrations" / "set_b").glob("*.jpg"))[:2]
    code, out, _ = run(capsys, "detect", *pictures, "--out", tmp_path / "out")
    written = sorted((tmp_path / "out").iterdir())
    assert code == 0 and [p.name for p in written] == [p.stem + ".jpg" for p in pictures]
    from animeface.io import load_image

    for original, annotated in zip(pictures, written):
        assert load_image(annotated).shape == load_image(original).shape
    code, out, _ = run(capsys, "detect", pictures[0], "--out", tmp_path / "out")
    assert len(list((tmp_path / "out").iterdir())) == 3, "an existing annotated copy is never overwritten"
