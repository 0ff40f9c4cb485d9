"""The shipped embedder on the real ImageNet Inception-v3 weights (../shared/data/models), loaded
through the same path as a user's downloaded file."""

import numpy as np
import pytest

import animeface
from animeface.embed import Embedder
from animeface.models import STRANGER_REFUSAL

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


def embedded(rec, paths):
    """The vectors of face crops, embedded once so that each setting of the knob names the same faces."""
    return rec.embedder.embed(np.stack([rec.face_crops(animeface.load_image(p), "whole")[1][0] for p in paths]))


def test_enrolled_characters_are_named_on_pictures_not_enrolled(real_weights, tmp_path):
    rec = animeface.Recognizer(tmp_path / "g", backbone=real_weights, progress=False)
    for name in NAMED:
        rec.enroll(name, crops(name, 0, 10), faces="whole")
    tests = [(name, path) for name in NAMED for path in crops(name, 60, 8)]
    vectors = embedded(rec, [path for _, path in tests])
    # the default refuses 95% of strangers; refusing 80% names more of the enrolled characters
    for refusal, least_right in ((STRANGER_REFUSAL, 0.7), (0.8, 0.85)):
        rec.stranger_refusal = refusal
        faces = rec.name_faces(vectors, [animeface.Box(0, 0, 1, 1)] * len(vectors))
        assert all(0.0 <= f.score <= 1.0 and all(0.0 <= p <= 1.0 for _, p in f.candidates) for f in faces)
        named = [f.label for f in faces]
        right = sum(label == name for (name, _), label in zip(tests, named))
        wrong = sum(label not in (None, name) for (name, _), label in zip(tests, named))
        assert right >= least_right * len(tests), (refusal, named)
        assert wrong <= 0.05 * len(tests), (refusal, named)


def test_refusing_more_strangers_calls_more_of_them_unknown(real_weights, tmp_path):
    """Strangers of two kinds: characters the embedder never saw (unlabeled64 crops), and characters
    it was trained on whom nobody enrolled."""
    rec = animeface.Recognizer(tmp_path / "g", backbone=real_weights, progress=False)
    for name in NAMED:
        rec.enroll(name, crops(name, 0, 15), faces="whole")
    unseen = sorted((SHARED / "faces" / "unlabeled64").iterdir())[::25][:45]
    trained = [p for name in ("kronii", "fauna", "kiara") for p in sorted((HOLOEN / name).iterdir())[:15]]
    known = [p for name in NAMED for p in crops(name, 60, 6)]
    vectors = embedded(rec, unseen + trained + known)
    kinds = {"unseen": slice(0, len(unseen)), "trained": slice(len(unseen), len(unseen) + len(trained)),
             "known": slice(len(unseen) + len(trained), None)}
    refused = {kind: [] for kind in kinds}
    for refusal in (0.5, 0.8, 0.95, 0.99):
        rec.stranger_refusal = refusal
        faces = rec.name_faces(vectors, [animeface.Box(0, 0, 1, 1)] * len(vectors))
        for kind, rows in kinds.items():
            refused[kind].append(np.mean([f.label is None for f in faces[rows]]))
    assert refused["unseen"] == sorted(refused["unseen"]) and refused["unseen"][-1] > refused["unseen"][0], refused
    assert refused["known"] == sorted(refused["known"]), refused
    assert refused["unseen"][2] >= 0.85 and refused["trained"][2] >= 0.85, refused


def test_characters_the_embedder_was_trained_on_are_named_better_under_their_own_names(real_weights, tmp_path):
    """Enrolled under its training folder's name, a character's own faces leave the gallery's stranger
    bank (thresholds.gallery_bank); under another name they stay, and teach the rule to refuse it."""
    from animeface.gallery import Gallery

    characters = sorted(p.name for p in HOLOEN.iterdir())
    enrolled, strangers = characters[::2][:6], characters[1::2][:4]
    rec = animeface.Recognizer(tmp_path / "g", backbone=real_weights, progress=False)
    shots = {name: embedded(rec, crops(name, 0, 10)) for name in enrolled}
    tests = [(name, path) for name in enrolled for path in crops(name, 60, 10)]
    shown = [path for name in strangers for path in crops(name, 60, 10)]
    vectors = embedded(rec, [path for _, path in tests] + shown)
    right, strangers_named = {}, {}
    for prefix in ("", "my "):  # "my gura" names no character of the bank
        rec.gallery = Gallery(rec.embedder.backbone_id, rec.embedder.dim, rec.embedder.description)
        for name in enrolled:
            rec.gallery.add(shots[name], [{"label": prefix + name, "source": "", "sha256": "0" * 64}] * 10)
        rec._refit()
        faces = rec.name_faces(vectors, [animeface.Box(0, 0, 1, 1)] * len(vectors))
        right[prefix] = sum(f.label == prefix + name for f, (name, _) in zip(faces, tests))
        strangers_named[prefix] = sum(f.label is not None for f in faces[len(tests):])
    assert right[""] > right["my "] and strangers_named[""] <= strangers_named["my "], (right, strangers_named)


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
