"""The shipped embedder on the real ImageNet Inception-v3 weights (../shared/data/models), loaded
through the same path as a user's downloaded file."""

import numpy as np
import pytest

import animeface
from animeface.embed import Embedder

from conftest import HOLOEN, SHARED, crops

WEIGHTS = SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5"
#: Characters the shipped projection was trained on, and pictures of them it never saw in enrolment.
NAMED = ("ame", "bae", "irys", "mumei", "shiori")


@pytest.fixture(scope="module")
def real_weights():
    if not WEIGHTS.is_file():
        pytest.fail(f"test data missing: {WEIGHTS}")
    return str(WEIGHTS)


def test_the_shared_weights_are_the_official_imagenet_backbone(real_weights):
    """The truncated copy and the official download give one id, so galleries move between them;
    converting checks that id against the weights actually read."""
    shared = Embedder(real_weights)
    assert shared.backbone_id == Embedder("imagenet").backbone_id
    assert shared.projection is not None and shared.projection.card["backbone_id"] == shared.backbone_id
    vectors = shared.embed(np.zeros((2, 299, 299, 3), np.uint8))
    assert vectors.shape == (2, shared.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_enrolled_characters_are_named_on_pictures_not_enrolled(real_weights, tmp_path):
    rec = animeface.Recognizer(tmp_path / "g", backbone=real_weights, progress=False)
    for name in NAMED:
        rec.enroll(name, crops(name, 0, 10), faces="whole")
    tests = [(name, path) for name in NAMED for path in crops(name, 60, 8)]
    results = rec.identify_batch([path for _, path in tests], faces="whole")
    named = [faces[0].label for faces in results]
    right = sum(label == name for (name, _), label in zip(tests, named))
    wrong = sum(label not in (None, name) for (name, _), label in zip(tests, named))
    assert right >= 0.85 * len(tests), named
    assert wrong <= 0.05 * len(tests), named


def test_a_character_never_enrolled_is_mostly_unknown(real_weights, tmp_path):
    rec = animeface.Recognizer(tmp_path / "g", backbone=real_weights, progress=False)
    for name in NAMED:
        rec.enroll(name, crops(name, 0, 15), faces="whole")
    strangers = sorted((HOLOEN / "kronii").iterdir())[:20]
    named = [faces[0].label for faces in rec.identify_batch(strangers, faces="whole")]
    assert sum(label is None for label in named) >= 0.6 * len(strangers), named


def test_a_full_notop_file_in_the_keras_2_layout_gives_the_same_backbone(real_weights, tmp_path):
    """Users download the official full "notop" file (Keras 2 layout, every layer to mixed10). A file
    of that layout holding the shared weights converts to the same id, computed from the values read."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(299, 299, 3))
    keras.Model(base.input, base.get_layer("mixed8").output).load_weights(real_weights)
    full = tmp_path / "inception_v3_notop_keras2_layout.h5"
    with h5py.File(full, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, base)
    embedder = Embedder(str(full))
    assert embedder.backbone_id == Embedder("imagenet").backbone_id == Embedder(real_weights).backbone_id
    assert embedder.projection is not None, "the shipped projection applies to it"


@pytest.mark.parametrize("counts", [{"gura": 12, "calli": 12}, {"gura": 25, "ame": 3, "kiara": 3, "mumei": 3}])
def test_sort_group_unknown_never_files_two_characters_into_one_group(real_weights, tmp_path, counts):
    """Balanced, or one character filling most of the folder (what a fan's folder looks like):
    every group folder holds one character, and the largest character is grouped."""
    from animeface.sort import sort_folder

    src, dst = tmp_path / "src", tmp_path / "sorted"
    src.mkdir()
    for name, count in counts.items():
        for path in crops(name, 60, count):
            (src / f"{name}-{path.name}").write_bytes(path.read_bytes())
    rec = animeface.Recognizer(tmp_path / "g", backbone=real_weights, progress=False)
    sort_folder(rec, src, dst, faces="auto", group_unknown=True)
    groups = sorted(p for p in (dst / "_unknown").glob("group-*"))
    characters = [{f.name.split("-")[0] for f in g.iterdir()} for g in groups]
    assert characters and all(len(c) == 1 for c in characters), characters
    assert set.union(*characters) >= {max(counts, key=counts.get)}, characters
