"""The softmax head and the decision rule calibrated against strangers, on synthetic clusters of unit vectors."""

import numpy as np
import pytest

from animeface.head import SoftmaxHead
from animeface.thresholds import Normaliser, calibrate, class_means, gallery_bank

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


def named(head, rule, gallery, queries, bank=None, refusal=0.95):
    """The decision rule of Recognizer.name_faces (all characters compared): the top name, or None,
    and every face's probabilities."""
    vectors, labels = gallery
    classes = list(dict.fromkeys(labels))
    y = np.array([classes.index(x) for x in labels])
    means = class_means(vectors, y, len(classes))
    scores = Normaliser(means, bank)(queries @ means.T, queries)
    log_probs = np.log(np.maximum(head.predict_proba(queries), 1e-6)) if head else np.zeros_like(scores)
    probs = rule.probabilities(scores, log_probs)
    top = probs.argmax(axis=1)
    keep = probs[np.arange(len(top)), top] >= rule.threshold(refusal)
    return [classes[t] if k else None for t, k in zip(top, keep)], probs


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


def test_calibrated_rule_names_known_faces_and_refuses_a_held_out_cluster():
    vectors, labels = clusters(12, 24, seed=4)
    enrolled = np.array([x in ("c0", "c1", "c2", "c3", "c4", "c5") for x in labels])
    banked = np.array([x in ("c7", "c8", "c9", "c10", "c11") for x in labels])  # characters nobody enrolls
    bank = vectors[banked]
    gallery_labels = [x for x, e in zip(labels, enrolled) if e]
    head = SoftmaxHead().fit(vectors[enrolled], gallery_labels)
    rule = calibrate(vectors[enrolled], gallery_labels, head, bank)
    assert rule.source == "calibrated"
    fresh, fresh_labels = clusters(12, 40, seed=4)  # same centres, new faces
    keep = np.array([x in gallery_labels or x == "c6" for x in fresh_labels])
    fresh, fresh_labels = fresh[keep], [x for x, k in zip(fresh_labels, keep) if k]
    answers, probs = named(head, rule, (vectors[enrolled], gallery_labels), fresh, bank)
    known = [a == t for a, t in zip(answers, fresh_labels) if t != "c6"]
    strangers = [a is None for a, t in zip(answers, fresh_labels) if t == "c6"]
    assert np.mean(known) >= 0.7
    assert np.mean(strangers) >= 0.7
    # every name's probability lies in [0, 1]; what the names leave is "none of them", most of a stranger's
    assert probs.min() >= 0.0 and probs.max() <= 1.0 and (probs.sum(axis=1) <= 1.0 + 1e-6).all()
    is_stranger = np.array([t == "c6" for t in fresh_labels])
    assert np.mean(1.0 - probs[is_stranger].sum(axis=1)) > 0.5 > np.mean(1.0 - probs[~is_stranger].sum(axis=1))


def test_refusing_more_strangers_raises_the_threshold_never_below_even_odds():
    vectors, labels = clusters(8, 12, seed=5, spread=1.5)  # characters that overlap
    head = SoftmaxHead().fit(vectors[:72], labels[:72])
    rule = calibrate(vectors[:72], labels[:72], head, vectors[72:])
    thresholds = [rule.threshold(r) for r in (0.1, 0.5, 0.9, 0.99, 0.999)]
    assert thresholds == sorted(thresholds) and thresholds[0] == 0.5 < thresholds[-1] <= 1.0
    for bad in (0.0, 1.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match="between 0 and 1"):
            rule.threshold(bad)


def test_one_character_is_calibrated_against_the_stranger_bank():
    vectors, labels = clusters(6, 20, seed=6, spread=0.3)
    mine = np.array([x == "c0" for x in labels])
    bank = vectors[~mine][::2]
    rule = calibrate(vectors[mine], [x for x, m in zip(labels, mine) if m], None, bank)
    assert rule.source == "calibrated"
    fresh, fresh_labels = clusters(6, 40, seed=6, spread=0.3)
    answers, _ = named(None, rule, (vectors[mine], ["c0"] * int(mine.sum())), fresh, bank)
    own = [a == "c0" for a, t in zip(answers, fresh_labels) if t == "c0"]
    other = [a is None for a, t in zip(answers, fresh_labels) if t != "c0"]
    assert np.mean(own) >= 0.7 and np.mean(other) >= 0.8


def test_one_character_without_a_bank_keeps_most_of_its_own_faces():
    vectors, labels = clusters(1, 30, seed=7, spread=0.3)
    rule = calibrate(vectors, labels, None, None)
    assert rule.source == "fallback"
    answers, _ = named(None, rule, (vectors, labels), clusters(1, 60, seed=7, spread=0.3)[0][30:], None)
    assert np.mean([a == "c0" for a in answers]) >= 0.7


def test_a_gallery_of_single_faces_falls_back():
    vectors, labels = clusters(3, 1, seed=7)
    head = SoftmaxHead().fit(vectors, labels)
    assert calibrate(vectors, labels, head, None).source == "fallback"


def test_a_bank_character_a_gallery_enrolls_under_its_name_leaves_that_gallery_s_bank():
    names = ["gura", "000_hatsune_miku", "aqua_(konosuba)", "abigail_williams_(fate)", "ina", "kiara", "ame", "bae"]
    characters = np.repeat(np.arange(len(names)), 3)
    faces = np.arange(len(characters), dtype=np.float32)[:, None]
    labels = ["Ｇｕｒａ", "Miku Hatsune", "aqua (hololive)", "Abigail Williams (Fate)", "my gura", "gura"]
    strangers, own = gallery_bank(labels, faces, characters, names)
    assert sorted(own) == ["Abigail Williams (Fate)", "Miku Hatsune", "gura", "Ｇｕｒａ"]  # another Aqua, "my gura" not
    assert own["Miku Hatsune"].ravel().tolist() == [3, 4, 5] and own["Ｇｕｒａ"].ravel().tolist() == [0, 1, 2]
    assert strangers.ravel().tolist() == [6, 7, 8] + list(range(12, 24))
    for label in ("Aqua (KonoSuba)", "Aqua（KonoSuba）", "Aqua KonoSuba"):
        assert gallery_bank([label], faces, characters, names)[1][label].ravel().tolist() == [6, 7, 8]
    assert list(gallery_bank(["Abigail Williams (Fate/Grand Order)"], faces, characters, names)[1]) == [
        "Abigail Williams (Fate/Grand Order)"]
    assert gallery_bank(labels, faces, characters, [])[0].ravel().tolist() == list(range(24))  # a card without names
    assert gallery_bank(labels, None, None, []) == (None, {})


def test_a_gallery_that_enrolls_most_of_the_bank_keeps_all_of_it():
    # a bank of a few characters stands for strangers so badly that most of them get named
    names = [f"character {n}" for n in range(10)]
    characters = np.repeat(np.arange(len(names)), 2)
    faces = np.arange(len(characters), dtype=np.float32)[:, None]
    strangers, own = gallery_bank(names[:5], faces, characters, names)
    assert len(own) == 5 and len(strangers) == 10
    strangers, own = gallery_bank(names[:6], faces, characters, names)
    assert own == {} and len(strangers) == len(faces)

