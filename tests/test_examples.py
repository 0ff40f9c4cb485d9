"""The example scripts run as a user would run them, on a small sample of ../shared/data,
from a working folder they must leave untouched."""

import os
import subprocess
import sys

from PIL import Image

from conftest import CASCADE, RANDOM_BACKBONE, ROOT, crops


def run_example(name, *args, env, cwd):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)],
                            env=env, capture_output=True, text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_enroll_then_identify_then_sort(tmp_path, shared_data):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANIMEFACE_BACKBONE": RANDOM_BACKBONE,
           "ANIMEFACE_CASCADE": str(CASCADE), "ANIMEFACE_HOME": str(tmp_path / "default-gallery")}
    work, gallery = tmp_path / "work", tmp_path / "gallery"
    work.mkdir()
    root = tmp_path / "characters"
    for name in ("gura", "calli"):
        (root / name).mkdir(parents=True)
        for crop in crops(name, 0, 4):
            (root / name / crop.name).symlink_to(crop)
    out = run_example("enroll_from_folders.py", root, "--faces", "whole", "--gallery", gallery, env=env, cwd=work)
    assert "calli (4), gura (4)" in out

    picture = shared_data / "illustrations" / "set_b" / "test_2.jpg"
    out = run_example("identify_image.py", picture, "--gallery", gallery, "--out", tmp_path / "named.jpg", env=env, cwd=work)
    assert " at x=" in out and "saved" in out
    assert Image.open(tmp_path / "named.jpg").size == Image.open(picture).size

    src = tmp_path / "downloads"
    src.mkdir()
    (src / "face.jpg").symlink_to(crops("gura", 20, 1)[0])
    (src / "picture.jpg").symlink_to(picture)
    (src / "notes.txt").write_text("not a picture")
    (src / "broken.png").write_bytes(b"not a picture either")
    out = run_example("sort_folder.py", src, tmp_path / "sorted", "--gallery", gallery, env=env, cwd=work)
    written = [p for p in (tmp_path / "sorted").rglob("*") if p.is_file()]
    assert "skipped" in out and "broken.png" in out
    assert {p.name for p in written} <= {"face.jpg", "picture.jpg"} and len(written) >= 2
    assert sorted(p.name for p in src.iterdir()) == ["broken.png", "face.jpg", "notes.txt", "picture.jpg"]
    assert list(work.iterdir()) == [] and not (tmp_path / "default-gallery").exists(), "nothing written elsewhere"
