"""The softmax head and the calibrated thresholds on synthetic clusters of unit vectors."""

import numpy as np
import pytest

from animeface.head import SoftmaxHead
from animeface.thresholds import calibrate

DIM = 64


def clusters(n_classes, per_class, seed, spread=0.6):
    """Unit vectors around random class centres, sharing one dominant direction as
    backbone vectors do; labels 'c0', 'c1', ..."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, DIM))
    common = 4.0 * np.eye(DIM)[0]
    vectors = np.concatenate([common + c + spread * rng.normal(size=(per_class, DIM)) for c in centres])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [f"c{i}" for i in range(n_classes) for _ in range(per_class)]


def named(head, thresholds, gallery, queries):
    """The decision rule of Recognizer.name_faces: the top name, or None."""
    probs = head.predict_proba(queries)
    labels = np.array([head.classes.index(x) for x in gallery[1]])
    out = []
    for q, p in zip(queries, probs):
        top = int(np.argmax(p))
        nearest = (gallery[0][labels == top] @ q).max()
        ok = p[top] >= thresholds.probability and nearest >= thresholds.similarity
        out.append(head.classes[top] if ok else None)
    return out


def test_head_names_well_separated_clusters():
    vectors, labels = clusters(5, 30, seed=0)
    train = np.arange(len(labels)) % 3 != 0
    head = SoftmaxHead().fit(vectors[train], [x for x, t in zip(labels, train) if t])
    probs = head.predict_proba(vectors[~train])
    assert probs.shape == (int((~train).sum()), 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    predicted = [head.classes[i] for i in probs.argmax(axis=1)]
    assert predicted == [x for x, t in zip(labels, train) if not t]


def test_head_round_trips_through_arrays():
    vectors, labels = clusters(3, 10, seed=1)
    head = SoftmaxHead().fit(vectors, labels)
    again = SoftmaxHead.from_arrays(head.to_arrays())
    assert again.classes == head.classes
    np.testing.assert_array_equal(again.predict_proba(vectors), head.predict_proba(vectors))


def test_head_is_the_same_whichever_form_solves_it():
    # more vectors than dimensions (primal form) and fewer (dual form) give one answer
    vectors, labels = clusters(4, 20, seed=2)
    narrow = SoftmaxHead().fit(vectors, labels)
    wide = np.concatenate([vectors, np.zeros((len(vectors), 100), np.float32)], axis=1)
    padded = SoftmaxHead().fit(wide, labels)
    np.testing.assert_allclose(narrow.predict_proba(vectors), padded.predict_proba(wide), atol=1e-3)


def test_head_needs_two_characters():
    vectors, labels = clusters(1, 5, seed=3)
    with pytest.raises(ValueError, match="two characters"):
        SoftmaxHead().fit(vectors, labels)


def test_calibrated_thresholds_name_known_faces_and_reject_a_held_out_cluster():
    vectors, labels = clusters(7, 24, seed=4)
    enrolled = np.array([not x.startswith("c6") for x in labels])
    gallery_labels = [x for x, e in zip(labels, enrolled) if e]
    head = SoftmaxHead().fit(vectors[enrolled], gallery_labels)
    thresholds = calibrate(vectors[enrolled], gallery_labels, head)
    assert thresholds.source == "calibrated"
    fresh, fresh_labels = clusters(7, 40, seed=4)  # same centres, new faces
    fresh, fresh_labels = fresh[::2], fresh_labels[::2]
    answers = named(head, thresholds, (vectors[enrolled], gallery_labels), fresh)
    known = [a == t for a, t in zip(answers, fresh_labels) if t != "c6"]
    strangers = [a is None for a, t in zip(answers, fresh_labels) if t == "c6"]
    assert np.mean(known) >= 0.7
    assert np.mean(strangers) >= 0.5


def test_calibrate_reuses_the_heads_held_out_probabilities():
    vectors, labels = clusters(3, 12, seed=5)
    head = SoftmaxHead().fit(vectors, labels)
    assert calibrate(vectors, labels, head) == calibrate(vectors, labels)


def test_one_character_is_judged_by_similarity_alone():
    vectors, labels = clusters(2, 20, seed=6, spread=0.3)
    mine = np.array([x == "c0" for x in labels])
    thresholds = calibrate(vectors[mine], [x for x, m in zip(labels, mine) if m])
    assert thresholds.source == "calibrated" and thresholds.probability == 0.0
    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    enrolled = vectors[mine]
    own = np.array([v @ unit(enrolled.sum(axis=0) - v) for v in enrolled])  # each against the mean of the others
    other = vectors[~mine] @ unit(enrolled.sum(axis=0))
    assert np.mean(own >= thresholds.similarity) >= 0.8
    assert np.mean(other >= thresholds.similarity) <= 0.2


def test_a_gallery_of_single_faces_falls_back():
    vectors, labels = clusters(3, 1, seed=7)
    assert calibrate(vectors, labels).source == "fallback"
