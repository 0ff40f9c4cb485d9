"""Shared fixtures: real data from ../shared/data, the real cascade, and an isolated environment.

The backbone is always named explicitly as RANDOM_BACKBONE (the real Inception-v3
architecture with seeded random weights): ImageNet weights cannot be downloaded here.
"""

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CASCADE = SHARED / "cascades" / "lbpcascade_animeface.xml"
FACEBOXES = SHARED / "models" / "faceboxes" / "FaceBoxes_epoch_90.pth"
HOLOEN = SHARED / "faces" / "holoen20"
RANDOM_BACKBONE = "random-init:0"
#: Characters with clearly different colouring, so a small test gallery is meaningful.
CHARACTERS = ("gura", "calli", "kiara", "fauna")
ENROLL_SHOTS = 6
TEST_SHOTS = 4


def crops(character: str, start: int, count: int) -> list[Path]:
    return sorted((HOLOEN / character).iterdir())[start:start + count]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"test data missing: {SHARED} (the shared data folder must sit beside the project)")
    return SHARED


@pytest.fixture(scope="session")
def network_cache(tmp_path_factory) -> Path:
    """One cache of converted networks for the whole run: converting takes TensorFlow half a minute."""
    return tmp_path_factory.mktemp("network-cache")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch, network_cache):
    """Each test gets its own default gallery, the run's network cache, and the shared detector files."""
    monkeypatch.setenv("ANIMEFACE_HOME", str(tmp_path / "home-gallery"))
    monkeypatch.setenv("ANIMEFACE_CACHE", str(network_cache))
    monkeypatch.setenv("ANIMEFACE_CASCADE", str(CASCADE))
    monkeypatch.setenv("ANIMEFACE_DETECTOR", str(FACEBOXES))
    monkeypatch.delenv("ANIMEFACE_BACKBONE", raising=False)


@pytest.fixture(scope="session")
def built_gallery(tmp_path_factory, shared_data):
    """A saved gallery of four characters, six face crops each, made through the public API."""
    import animeface

    path = tmp_path_factory.mktemp("gallery") / "four"
    rec = animeface.Recognizer(path, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    for name in CHARACTERS:
        rec.enroll(name, crops(name, 0, ENROLL_SHOTS), faces="whole")
    rec.save()
    return path


@pytest.fixture
def gallery_copy(built_gallery, tmp_path) -> Path:
    """A private copy of the built gallery that a test may change."""
    target = tmp_path / "gallery"
    shutil.copytree(built_gallery, target)
    return target
