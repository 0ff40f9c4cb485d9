"""Model files: pinned, verified, cached atomically; offline gives a clear error.

The network cannot be reached here, so urlopen is replaced by one that serves
the real cascade bytes from ../shared/data (or fails, for the offline case).
"""

import io
import urllib.error
import urllib.request

import pytest

import animeface
from animeface import models
from animeface.cascade import cascade_path

from conftest import CASCADE, crops


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Downloads land in a cache of this test's own, to be inspected."""
    monkeypatch.setenv("ANIMEFACE_CACHE", str(tmp_path / "cache"))


def serve(monkeypatch, payload):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        if isinstance(payload, Exception):
            raise payload
        return FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def test_manifest_pins_the_cascade_and_the_keras_weights():
    entries = models.manifest()
    cascade = entries["lbpcascade_animeface"]
    assert cascade.sha256 == models.sha256_file(CASCADE)
    assert cascade.size == CASCADE.stat().st_size
    weights = entries["inception_v3_imagenet_notop"]
    assert weights.size == 87_596_580 and weights.url.endswith("_notop.h5")


def test_download_is_verified_cached_and_reused(monkeypatch, tmp_path):
    calls = serve(monkeypatch, CASCADE.read_bytes())
    path = models.fetch("lbpcascade_animeface", progress=False)
    assert path.parent == tmp_path / "cache"
    assert path.read_bytes() == CASCADE.read_bytes()
    assert models.fetch("lbpcascade_animeface", progress=False) == path
    assert len(calls) == 1, "a verified cached file is not downloaded again"


def test_corrupt_download_is_rejected_and_leaves_nothing(monkeypatch, tmp_path):
    serve(monkeypatch, CASCADE.read_bytes()[:-10] + b"tampered!!")
    with pytest.raises(animeface.ModelError, match="does not match"):
        models.fetch("lbpcascade_animeface", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_error_names_the_file_and_the_variable(monkeypatch):
    monkeypatch.delenv("ANIMEFACE_CASCADE")
    serve(monkeypatch, urllib.error.URLError("no network"))
    with pytest.raises(animeface.ModelError) as err:
        cascade_path()
    assert "lbpcascade_animeface.xml" in str(err.value) and "ANIMEFACE_CASCADE" in str(err.value)


def test_environment_variable_points_at_a_local_cascade(monkeypatch, tmp_path):
    assert cascade_path() == CASCADE
    monkeypatch.setenv("ANIMEFACE_CASCADE", str(tmp_path / "missing.xml"))
    with pytest.raises(animeface.ModelError, match="does not exist"):
        cascade_path()


def test_shipped_model_files_match_their_cards():
    """Each model file the project ships has a card whose sha256 is the file's."""
    import json
    from importlib.resources import files

    for package, name in (("animeface.cascades", "face_verifier"), ("animeface.embeddings", "anime-faces-v2")):
        folder = files(package)
        card = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        assert card["sha256"] == models.sha256_file(str(folder / f"{name}.npz")), name
        assert card["command"] and "seed" in card


@pytest.mark.parametrize("verb", [["sort", "SRC", "DST"], ["cluster", "SRC"], ["enroll", "Someone", "SRC"],
                                  ["evaluate", "SRC"]])
def test_offline_every_missing_model_file_is_named_at_once_before_any_work(monkeypatch, tmp_path, capsys, verb):
    """A first run offline: one message names the cascade, the detector and the backbone, each with
    its variable, rather than one per run."""
    from animeface.cli import EXIT_ERROR, main

    for name in ("ANIMEFACE_CASCADE", "ANIMEFACE_DETECTOR", "ANIMEFACE_BACKBONE"):
        monkeypatch.delenv(name, raising=False)
    calls = serve(monkeypatch, urllib.error.URLError("no network"))
    src = tmp_path / "src"
    for name in ("gura", "calli"):
        (src / name).mkdir(parents=True)
        (src / name / "face.jpg").write_bytes(crops(name, 0, 1)[0].read_bytes())
    argv = [str(src) if word == "SRC" else str(tmp_path / "dst") if word == "DST" else word for word in verb]
    assert main([*argv, "-q"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "3 model files are missing" in err and len(calls) == 3, err
    for file, variable in [("lbpcascade_animeface.xml", "ANIMEFACE_CASCADE"),
                           ("FaceBoxes_epoch_90.pth", "ANIMEFACE_DETECTOR"),
                           ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "ANIMEFACE_BACKBONE")]:
        assert file in err and variable in err
    assert "Keras 3 .weights.h5" in err and "mixed8" in err
    assert "loading the embedder" not in err and not (tmp_path / "dst").exists()
