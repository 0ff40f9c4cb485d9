"""The embedder: real Inception-v3, unit vectors, random weights only when named."""

import urllib.error
import urllib.request

import numpy as np
import pytest

import animeface
from animeface.crop import whole_image
from animeface.embed import CNN_DIM, COLOUR_DIM, Embedder, colour_histogram
from animeface.io import load_image

from conftest import RANDOM_BACKBONE, crops


def face_batch(n=3):
    return np.stack([whole_image(load_image(p), 299) for p in crops("gura", 0, n)])


def test_vectors_are_unit_length_and_sized():
    emb = Embedder(RANDOM_BACKBONE)
    vecs = emb.embed(face_batch())
    assert vecs.shape == (3, CNN_DIM + COLOUR_DIM) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_the_vectors():
    batch = face_batch(4)
    whole = Embedder(RANDOM_BACKBONE, batch_size=32).embed(batch)
    single = Embedder(RANDOM_BACKBONE, batch_size=1).embed(batch)
    assert np.allclose(whole, single, atol=1e-4)


def test_random_weights_warn_and_are_recorded_by_seed():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        Embedder("random-init:7").embed(face_batch(1))
    assert Embedder("random-init").backbone_id == "random-init:0"
    assert Embedder("random-init:7").backbone_id == "random-init:7"


def test_default_backbone_is_imagenet_never_random(monkeypatch):
    """Offline, the default must fail loudly, not fall back to random weights."""
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    emb = Embedder()
    assert emb.backbone_id == "keras-inception-v3-imagenet"
    with pytest.raises(animeface.ModelError) as err:
        emb.embed(face_batch(1))
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(err.value)
    assert "ANIMEFACE_BACKBONE" in str(err.value)


def test_unknown_backbone_spec_is_a_clear_error():
    with pytest.raises(animeface.ModelError, match="ANIMEFACE_BACKBONE"):
        Embedder("no-such-backbone")


def test_saved_model_folder_is_a_backbone(tmp_path):
    """A local SavedModel loads through tf.saved_model, the path TF-Hub handles take too."""
    import tensorflow as tf

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(x, axis=[1, 2]) @ tf.ones([3, CNN_DIM])

    tf.saved_model.save(Tiny(), str(tmp_path / "sm"))
    emb = Embedder(str(tmp_path / "sm"), colour_weight=0)
    assert emb.backbone_id.startswith("savedmodel:")
    vecs = emb.embed(face_batch(2))
    assert vecs.shape == (2, CNN_DIM) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_colour_histogram_tells_colours_apart():
    red = np.zeros((299, 299, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros_like(red)
    blue[..., 2] = 220
    h_red, h_blue = colour_histogram(red), colour_histogram(blue)
    assert np.isclose(np.linalg.norm(h_red), 1.0)
    assert float(h_red @ h_blue) < 0.1 and float(h_red @ colour_histogram(red.copy())) > 0.99
