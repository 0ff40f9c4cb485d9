"""The embedder: real Inception-v3 run by OpenVINO, unit vectors, random weights only when named."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

import animeface
from animeface.crop import whole_image
from animeface.embed import COLOUR_DIM, Embedder, Projection, Recipe, colour_histogram, shipped_projection
from animeface.io import load_image

from conftest import RANDOM_BACKBONE, ROOT, crops


def face_batch(n=3, size=299):
    return np.stack([whole_image(load_image(p), size) for p in crops("gura", 0, n)])


def test_vectors_are_unit_length_and_sized():
    emb = Embedder(RANDOM_BACKBONE)
    vecs = emb.embed(face_batch())
    assert emb.projection is None, "a projection trained on ImageNet features must not apply to random weights"
    assert vecs.shape == (3, 768 + 768 + COLOUR_DIM) == (3, emb.dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_the_vectors():
    batch = face_batch(4)
    whole = Embedder(RANDOM_BACKBONE, batch_size=16).embed(batch)
    single = Embedder(RANDOM_BACKBONE, batch_size=1).embed(batch)
    assert np.allclose(whole, single, atol=1e-4)


def test_openvino_network_computes_what_the_keras_network_computes():
    """The converted network is the Keras one: same pooled features to 1e-4."""
    from animeface.backbone import Network, _keras_network, parse_spec

    batch = face_batch(2)
    network = Network(RANDOM_BACKBONE, ("mixed5", "mixed7"), "avg", 299, precision="f32")
    keras_pooled, _ = _keras_network(parse_spec(RANDOM_BACKBONE), network.layers, "avg", 299)
    expected = keras_pooled(batch).numpy()
    assert np.allclose(network(batch), expected, atol=1e-4 * float(np.abs(expected).max()))
    fast = Network(RANDOM_BACKBONE, ("mixed5", "mixed7"), "avg", 299)(batch)  # bf16 where the CPU has it
    cosine = (fast * expected).sum(axis=1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.999


def test_a_cached_network_runs_without_importing_tensorflow(tmp_path):
    """After the one conversion, a fresh process embeds with OpenVINO alone."""
    Embedder(RANDOM_BACKBONE).embed(face_batch(1))  # converted and cached (ANIMEFACE_CACHE)
    script = ("import sys, warnings; warnings.simplefilter('ignore')\n"
              "import numpy as np\n"
              "from animeface.embed import Embedder\n"
              f"v = Embedder({RANDOM_BACKBONE!r}).embed(np.zeros((1, 299, 299, 3), np.uint8))\n"
              "print(v.shape[1], 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1608", "False"]
    assert "preparing the embedder" not in out.stderr


def test_a_damaged_cached_network_is_a_clear_error():
    from animeface.backbone import Network, network_folder, parse_spec
    from animeface.runtime import _compiled

    network = Network("random-init:5", ("mixed5",), "avg", 160)
    network(face_batch(1, 160))
    folder = network_folder(parse_spec("random-init:5"), ("mixed5",), "avg", 160)
    with open(folder / "network.bin", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00garbage\x00")
    _compiled.clear()  # as in a new run
    with pytest.raises(animeface.ModelError, match="damaged.*network.bin"):
        Network("random-init:5", ("mixed5",), "avg", 160)(face_batch(1, 160))


def test_random_weights_warn_and_are_recorded_by_seed():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        Embedder("random-init:7")
    assert Embedder("random-init").backbone_id == "random-init:0"
    assert Embedder("random-init:7").backbone_id == "random-init:7"


def test_default_backbone_is_imagenet_never_random(monkeypatch):
    """Offline, the default must fail loudly, not fall back to random weights."""
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    emb = Embedder()
    assert emb.projection is not None and emb.projection.name == "anime-faces-v2"
    with pytest.raises(animeface.ModelError) as err:
        emb.embed(face_batch(1))
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(err.value)
    assert "ANIMEFACE_BACKBONE" in str(err.value)


def test_unknown_backbone_spec_is_a_clear_error():
    with pytest.raises(animeface.ModelError, match="ANIMEFACE_BACKBONE"):
        Embedder("no-such-backbone")


def test_the_shipped_projection_has_a_card_that_matches_it():
    path = shipped_projection()
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    projection = Projection.load(path)
    assert projection.sha256 == card["sha256"]
    assert card["command"].startswith("animeface train ") and "--seed" in card["command"]
    assert card["backbone_id"].startswith("inception-v3:")
    assert projection.matrix.shape == (projection.recipe.dim, card["components"])


def test_a_tampered_or_pickled_projection_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    recipe = Recipe(layers=("mixed5",), colour_weight=0)
    good = Projection(np.zeros(768, np.float32), rng.normal(size=(768, 16)).astype(np.float32), recipe,
                      rng.normal(size=(4, 16)).astype(np.float32), np.array([0, 0, 1, 1], np.int32))
    path = good.save(tmp_path / "p", {"name": "p", "backbone_id": "random-init:0"})
    loaded = Projection.load(path)
    assert np.allclose(loaded.matrix, good.matrix) and np.allclose(loaded.strangers, good.strangers)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(animeface.ModelError, match="sha256"):
        Projection.load(path)
    import hashlib
    import io

    buffer = io.BytesIO()
    np.savez(buffer, mean=np.zeros(768, np.float32), matrix=np.array([{"x": 1}], dtype=object),
             recipe=np.array(json.dumps(recipe.to_dict())))
    path.write_bytes(buffer.getvalue())
    card = json.loads(path.with_suffix(".json").read_text())
    card["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(animeface.ModelError, match="not a usable embedder projection"):
        Projection.load(path)
    # a projection the previous release made: no stranger bank
    buffer = io.BytesIO()
    np.savez(buffer, mean=np.zeros(768, np.float32), matrix=good.matrix, recipe=np.array(json.dumps(recipe.to_dict())))
    path.write_bytes(buffer.getvalue())
    card["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(animeface.ModelError, match="no stranger bank: train it again"):
        Projection.load(path)


def test_a_projection_for_other_weights_is_refused(tmp_path):
    recipe = Recipe(layers=("mixed5",), colour_weight=0)
    path = Projection(np.zeros(768, np.float32), np.eye(768, 8, dtype=np.float32), recipe,
                      np.eye(2, 8, dtype=np.float32), np.array([0, 1], np.int32)).save(
        tmp_path / "p", {"name": "p", "backbone_id": "inception-v3:0000000000000000"})
    with pytest.raises(animeface.ModelError, match="trained on backbone"):
        Embedder(RANDOM_BACKBONE, projection=path)


@pytest.mark.parametrize("bad", [dict(layers=("mixed9",)), dict(pooling="median"), dict(power=0),
                                 dict(colour_weight=-1), dict(input_size=20000), dict(input_size=299.0)])
def test_a_bad_recipe_is_refused(bad):
    with pytest.raises(ValueError):
        Recipe(**bad)


def test_colour_histogram_tells_colours_apart():
    red = np.zeros((299, 299, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros_like(red)
    blue[..., 2] = 220
    h_red, h_blue = colour_histogram(red), colour_histogram(blue)
    assert np.isclose(np.linalg.norm(h_red), 1.0)
    assert float(h_red @ h_blue) < 0.1 and float(h_red @ colour_histogram(red.copy())) > 0.99
