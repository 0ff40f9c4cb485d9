"""`explain` on the real weights and the shipped projection: the hand-written derivatives against
TensorFlow's, maps that add up to the similarity they explain, and the deletion check."""

import json

import numpy as np
import pytest

import animeface
from animeface import cli
from animeface.embed import colour_histogram
from animeface.explain import deletion_drops, spread, vectors_and_maps

from conftest import CHARACTERS, SHARED, crops

WEIGHTS = SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5"


@pytest.fixture(scope="module")
def explainer(network_cache, tmp_path_factory):
    """A saved gallery of four characters, six crops each, on the real weights, and its recognizer."""
    if not WEIGHTS.is_file():
        pytest.fail(f"test data missing: {WEIGHTS}")
    path = tmp_path_factory.mktemp("explain") / "g"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ANIMEFACE_CACHE", str(network_cache))
        rec = animeface.Recognizer(path, backbone=str(WEIGHTS), progress=False)
        for name in CHARACTERS:
            rec.enroll(name, crops(name, 0, 6), faces="whole")
        rec.save()
        yield rec


def centroid(rec, name):
    return rec.gallery.centroids()[list(rec.characters).index(name)]


def tensorflow_heat(maps, crop, embedder, targets):
    """Gradient x activation of the similarity in each map, by TensorFlow's own gradients, over the same
    steps as the embedder (avg pooling, signed power, the normalisations' norms held, colour, projection)."""
    import tensorflow as tf

    recipe, held = embedder.recipe, tf.stop_gradient
    mean = tf.constant(embedder.projection.mean, tf.float64)
    matrix = tf.constant(embedder.projection.matrix, tf.float64)
    maps = [tf.constant(m, tf.float64) for m in maps]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(maps)
        z = [tf.pow(tf.reduce_mean(m, axis=[0, 1]), recipe.power) for m in maps]  # the maps are ReLU outputs
        joined = tf.concat([zl / held(tf.norm(zl)) for zl in z], 0)
        colour = tf.constant(colour_histogram(crop) * recipe.colour_weight, tf.float64)
        whole = tf.concat([joined / held(tf.norm(joined)), colour], 0)
        projected = tf.linalg.matvec(matrix, whole / held(tf.norm(whole)) - mean, transpose_a=True)
        similarities = tf.linalg.matvec(tf.constant(targets, tf.float64), projected) / held(tf.norm(projected))
        each = tf.unstack(similarities)
    fine = maps[0].shape[:2]
    heat = 0
    for m in maps:
        grads = np.stack([tape.gradient(each[t], m).numpy() for t in range(len(targets))])
        with np.errstate(invalid="ignore"):  # a channel zero everywhere: infinite slope at zero, adds nothing
            layer = np.nan_to_num(m.numpy()[None] * grads, nan=0.0, posinf=0.0, neginf=0.0).sum(-1) / recipe.power
        heat = heat + np.einsum("ih,thw,jw->tij", spread(fine[0], m.shape[0]), layer, spread(fine[1], m.shape[1]))
    return heat, similarities.numpy()


def test_hand_written_derivatives_agree_with_tensorflow(explainer):
    rec = explainer
    crop = rec.face_crops(animeface.load_image(crops("gura", 60, 1)[0]), "whole")[1][0]
    items = rec.explain(crop, faces="whole", top=3)
    assert [i.candidate for i in items] == [n for n, _ in rec.identify(crop, faces="whole")[0].candidates[:3]]
    seen = items[0].crop  # the crop as the embedder saw it
    _, maps = vectors_and_maps(rec.embedder, seen[None])
    targets = np.stack([centroid(rec, i.candidate) for i in items])
    heat, similarities = tensorflow_heat([m[0] for m in maps], seen, rec.embedder, targets)
    for item, theirs, similarity in zip(items, heat, similarities):
        assert np.linalg.norm(item.heat - theirs) < 0.01 * np.linalg.norm(theirs)
        assert item.similarity == pytest.approx(similarity, abs=1e-5)


def test_maps_lie_over_the_face_and_add_up_to_the_similarity(explainer):
    """heat + colour + offset is the similarity exactly; the similarity is the one the gallery ranks
    by, from the embedder's own vector; the map is a grid over the square crop, and a mirrored face
    gives (near enough) the mirrored map, so columns run left to right."""
    rec = explainer
    path = crops("kiara", 60, 1)[0]
    face = rec.identify(path, faces="whole")[0]
    items = rec.explain(path, faces="whole", top=2)
    assert [(i.face, i.candidate) for i in items] == [(0, n) for n, _ in face.candidates[:2]]
    crop = rec.face_crops(animeface.load_image(path), "whole")[1][0]
    vector = rec.embedder.embed(crop[None])[0]
    for item in items:
        assert item.box == face.box and item.label == face.label and np.array_equal(item.crop, crop)
        assert item.heat.ndim == 2 and item.heat.shape[0] == item.heat.shape[1] > 1
        assert np.isfinite(item.heat).all() and -1 <= item.colour_share <= 1
        assert float(item.heat.sum()) + item.colour + item.offset == pytest.approx(item.similarity, abs=1e-5)
        assert item.similarity == pytest.approx(float(vector @ centroid(rec, item.candidate)), abs=0.01)
    mirrored = rec.explain(crop[:, ::-1].copy(), faces="whole", top=1)
    assert mirrored[0].candidate == items[0].candidate
    flipped, same = (np.corrcoef(mirrored[0].heat.ravel(), h.ravel())[0, 1]
                     for h in (items[0].heat[:, ::-1], items[0].heat))
    assert flipped > 0.5 and flipped > same


def test_blanking_the_hottest_fifth_lowers_the_similarity_most(explainer):
    """The deletion check on crops not enrolled: on average, blanking the hottest 20% of the cells lowers
    the similarity with the best candidate more than a random 20% and than the coldest 20%; zeroing
    those cells in the feature maps themselves (what the map accounts for) does so on every crop."""
    rec = explainer
    rng = np.random.default_rng(0)
    blanked, zeroed = [], []
    for name in CHARACTERS:
        for path in crops(name, 70, 3):
            item = rec.explain(path, faces="whole", top=1)[0]
            target = centroid(rec, item.candidate)
            blanked.append(deletion_drops(rec.embedder, item, target, rng, fill="grey"))
            zeroed.append(deletion_drops(rec.embedder, item, target, rng, fill="features"))
    mean = {k: np.mean([d[k] for d in blanked]) for k in blanked[0]}
    assert mean["hottest"] > mean["random"] and mean["hottest"] > mean["coldest"], mean
    assert all(d["hottest"] > d["random"] > d["coldest"] for d in zeroed), zeroed


def test_the_command_writes_a_contact_sheet_and_json(explainer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", str(WEIGHTS))
    face = crops("fauna", 60, 1)[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "why"
    args = ["explain", "--gallery", str(explainer.path), "--faces", "whole", "--top", "2", "-q"]
    assert cli.main(args + [str(face), str(broken), "--out", str(out), "--json"]) == cli.EXIT_SOME_FAILED
    printed = capsys.readouterr()
    lines = [json.loads(line) for line in printed.out.splitlines()]
    assert [line["error"] is None for line in lines] == [True, False] and "broken.png" in printed.err
    first = lines[0]["explanations"]
    assert len(first) == 2 and all(np.array(e["heat"]).shape[0] == np.array(e["heat"]).shape[1] > 1 for e in first)
    assert all(-1 <= e["colour_share"] <= 1 for e in first)
    sheet = (out / "index.html").read_text(encoding="utf-8")
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 4 and all(name in sheet for name in written if name != "index.html")
    assert first[0]["candidate"] in sheet
    # a second run into the same folder replaces nothing
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert cli.main(args + [str(face), "--out", str(out)]) == cli.EXIT_ERROR
    assert "index.html already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
