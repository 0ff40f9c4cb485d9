"""Grouping unknown faces by character: the method, a saved run, and the commands around it."""

import json
import shutil

import numpy as np
import pytest

import animeface
from animeface import cluster
from animeface.cli import EXIT_ERROR, EXIT_OK, main
from animeface.embed import Projection, shipped_projection

from conftest import CASCADE, RANDOM_BACKBONE, SHARED, crops

WEIGHTS = SHARED / "models" / "inception_v3_imagenet_to_mixed8.weights.h5"
#: A threshold low enough for random weights to form groups: these tests check the plumbing.
LOOSE = 0.001


def characters_and_strangers(rng, characters=3, per=20, strangers=10, dim=256, spread=0.5):
    """Faces of a few characters (a direction each, plus noise) and strangers (noise alone)."""
    centres = rng.normal(size=(characters, dim))
    vectors = [c + spread * rng.normal(size=(per, dim)) * np.linalg.norm(c) / np.sqrt(dim) for c in centres]
    vectors.append(rng.normal(size=(strangers, dim)))
    truth = np.repeat(np.arange(characters + 1), [per] * characters + [strangers])
    return np.concatenate(vectors).astype(np.float32), truth


def test_each_character_becomes_one_group_and_strangers_stay_ungrouped():
    vectors, truth = characters_and_strangers(np.random.default_rng(0))
    group = cluster.group(vectors, threshold=0.2)
    for character in range(3):
        assert len(set(group[truth == character])) == 1 and group[truth == character][0] >= 0
    assert len(set(group[truth < 3])) == 3
    assert (group[truth == 3] == -1).all()


def test_groups_are_numbered_from_the_largest():
    rng = np.random.default_rng(1)
    small, _ = characters_and_strangers(rng, characters=1, per=6, strangers=0)
    large, _ = characters_and_strangers(rng, characters=1, per=15, strangers=0)
    group = cluster.group(np.concatenate([small, large]), threshold=0.2)
    assert (group[6:] == 0).all() and (group[:6] == 1).all()


def test_faces_of_one_picture_never_share_a_group():
    vectors, truth = characters_and_strangers(np.random.default_rng(4), characters=2, per=12, strangers=0)
    pictures = np.arange(len(vectors))
    pictures[truth == 0] = np.arange(12) % 6  # character 0: two faces in each of six pictures
    together = cluster.group(vectors, threshold=0.2)
    apart = cluster.group(vectors, threshold=0.2, pictures=pictures)
    assert len(set(together[truth == 0])) == 1
    for picture in range(6):
        first, second = apart[(truth == 0) & (pictures == picture)]
        assert first != second or first == -1
    assert len(set(apart[truth == 1])) == 1 and apart[truth == 1][0] >= 0


def test_a_group_smaller_than_the_minimum_is_left_ungrouped():
    vectors, _ = characters_and_strangers(np.random.default_rng(2), characters=1, per=cluster.MIN_GROUP - 1,
                                          strangers=30)
    assert (cluster.group(vectors, threshold=0.2) == -1).all()


def test_the_threshold_comes_from_the_shipped_calibration():
    card = Projection.load(shipped_projection()).card
    same, different = card["pair_similarity"]["same"], card["pair_similarity"]["different"]
    assert cluster.threshold_from(card["pair_similarity"]) == pytest.approx((same + different) / 2)
    with pytest.raises(cluster.ClusterError, match="calibration"):
        cluster.threshold_from(None)


# -- through the API and the command line, on random weights: the plumbing, not the accuracy ---------


@pytest.fixture
def pictures(tmp_path):
    """Twelve face crops of three characters, in one folder."""
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("gura", "calli", "kiara"):
        for path in crops(name, 10, 4):
            shutil.copy(path, folder / f"{name}-{path.name}")
    return folder


def test_every_face_is_in_one_group_or_ungrouped_and_a_gallery_sets_aside_what_it_names(pictures, tmp_path):
    rec = animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    rec.enroll("gura", crops("gura", 10, 4), faces="whole")  # the very pictures: named by the gallery
    rec.enroll("calli", crops("calli", 40, 4), faces="whole")
    result = rec.cluster([pictures], faces="whole", threshold=LOOSE)
    grouped = [f.source for faces in result.groups for f in faces]
    ungrouped = [f.source for f in result.ungrouped]
    named = [f.source for f, _ in result.named]
    assert sorted(grouped + ungrouped + named) == sorted(str(p) for p in pictures.iterdir())
    said = {str(p): rec.identify(p, faces="whole")[0].label for p in pictures.iterdir()}
    assert {f.source: name for f, name in result.named} == {p: name for p, name in said.items() if name}


def test_cluster_json_and_naming_a_group_from_the_saved_run(pictures, tmp_path, capsys):
    out, gallery = tmp_path / "groups", tmp_path / "gallery"
    code = main(["cluster", str(pictures), "--faces", "whole", "--json", "--out", str(out), "--similarity", str(LOOSE),
                 "--backbone", RANDOM_BACKBONE, "--gallery", str(gallery), "-q"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == EXIT_OK
    result = json.loads(printed[-1])
    sizes = [len(c["faces"]) for c in result["clusters"]]
    assert [c["id"] for c in result["clusters"]] == list(range(1, len(sizes) + 1))
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) + len(result["ungrouped"]) == 12
    assert sizes and sizes[0] >= cluster.MIN_GROUP
    sheet = (out / "index.html").read_text()
    assert sheet.count("<section>") == len(sizes) + bool(result["ungrouped"]) and "data:image/jpeg;base64," in sheet

    enroll = ["enroll", "Someone", "--cluster", "1", "--from", str(out), "--backbone", RANDOM_BACKBONE,
              "--gallery", str(gallery), "-q"]
    assert main(enroll) == EXIT_OK
    assert f"Someone: {sizes[0]} face(s) enrolled" in capsys.readouterr().out
    assert main(enroll) == EXIT_OK  # again: every face is already there
    assert f"skipped {sizes[0]} (already enrolled as Someone)" in capsys.readouterr().out
    rec = animeface.Recognizer.open(gallery, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    assert rec.characters == {"Someone": sizes[0]}
    assert sorted(e["source"] for e in rec.gallery.entries) == sorted(f["source"] for f in result["clusters"][0]["faces"])


def test_a_run_is_never_written_over_and_a_missing_group_is_named(pictures, tmp_path, capsys):
    out = tmp_path / "groups"
    out.mkdir()
    (out / "index.html").write_text("mine")
    code = main(["cluster", str(pictures), "--faces", "whole", "--out", str(out), "--similarity", str(LOOSE),
                 "--backbone", RANDOM_BACKBONE, "-q"])
    assert code == EXIT_ERROR and "already exists" in capsys.readouterr().err
    assert (out / "index.html").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["index.html"]


def test_random_weights_have_no_calibration_so_the_threshold_must_be_given(pictures, capsys):
    code = main(["cluster", str(pictures), "--faces", "whole", "--backbone", RANDOM_BACKBONE, "-q"])
    assert code == EXIT_ERROR and "calibration" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["0", "-1", "nan", "inf", "1"])
def test_a_threshold_outside_0_to_1_is_refused(pictures, capsys, given):
    code = main(["cluster", str(pictures), "--faces", "whole", "--similarity", given, "--backbone", RANDOM_BACKBONE,
                 "--json", "-q"])
    out, err = capsys.readouterr()
    assert code == EXIT_ERROR and "above 0 and below 1" in err and not out


@pytest.mark.parametrize("damage", ["not json", "a pickle", "huge vectors", "a bad box", "a negative box",
                                    "an upper-case sha256", "vectors not of unit length", "no run at all",
                                    "a box past any picture"])
def test_a_damaged_run_is_a_clean_error(pictures, tmp_path, damage):
    rec = animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    out = tmp_path / "groups"
    rec.cluster([pictures], faces="whole", threshold=LOOSE).save(out, rec.run_description())
    run = json.loads((out / cluster.RUN_FILE).read_text())
    if damage == "not json":
        (out / cluster.RUN_FILE).write_text("{")
    elif damage == "a pickle":
        (out / cluster.VECTORS_FILE).unlink()
        np.save(out / cluster.VECTORS_FILE, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif damage == "huge vectors":
        header = {"descr": "<f4", "fortran_order": False, "shape": (2 ** 40, run["dim"])}
        with open(out / cluster.VECTORS_FILE, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
    elif damage == "vectors not of unit length":
        vectors = np.load(out / cluster.VECTORS_FILE)
        (out / cluster.VECTORS_FILE).unlink()
        np.save(out / cluster.VECTORS_FILE, vectors * 1000)
    elif damage == "no run at all":
        (out / cluster.RUN_FILE).unlink()
    else:
        face = run["faces"][0]
        face.update({"a bad box": {"box": ["__import__('os')", 0, 0, 0]}, "a negative box": {"box": [-5, 0, -1, 9]},
                     "a box past any picture": {"box": [0, 0, 1, 10 ** 9]},
                     "an upper-case sha256": {"sha256": face["sha256"].upper()}}[damage])
        (out / cluster.RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(cluster.ClusterError, match=str(out)):
        rec.enroll_group("Someone", out, 1)
    assert not rec.characters
    rec.save()  # what was refused left nothing behind that would stop the gallery from opening
    assert animeface.Recognizer.open(rec.path, backbone=RANDOM_BACKBONE, cascade=CASCADE).characters == {}


def test_a_run_from_another_embedder_is_refused(pictures, tmp_path):
    maker = animeface.Recognizer(tmp_path / "g1", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    out = tmp_path / "groups"
    maker.cluster([pictures], faces="whole", threshold=LOOSE).save(out, maker.run_description())
    other = animeface.Recognizer(tmp_path / "g2", backbone="random-init:1", cascade=CASCADE, progress=False)
    with pytest.raises(animeface.BackboneMismatchError, match="another embedder"):
        other.enroll_group("Someone", out, 1)


# -- on the real weights: what users get -------------------------------------------------------------


def test_real_weights_group_characters_apart(tmp_path):
    """Face crops of four characters, with an empty gallery and the shipped calibration: the groups
    found are pure, and most faces are grouped."""
    if not WEIGHTS.is_file():
        pytest.fail(f"test data missing: {WEIGHTS}")
    names = ("gura", "calli", "kiara", "fauna")
    files = [p for name in names for p in crops(name, 60, 12)]
    rec = animeface.Recognizer(tmp_path / "g", backbone=str(WEIGHTS), progress=False)
    result = rec.cluster(files, faces="whole")
    truth = {str(p): name for name in names for p in crops(name, 60, 12)}
    for faces in result.groups:
        members = [truth[f.source] for f in faces]
        assert max(members.count(n) for n in names) >= 0.9 * len(members), members
    assert len(result.ungrouped) <= 0.3 * len(files)
