"""`animeface train`: a projection from a folder per character, deterministic for a seed, with a card."""

import json

import numpy as np
import pytest

import animeface
from animeface.cli import main
from animeface.embed import Projection

from conftest import HOLOEN, RANDOM_BACKBONE, crops

TEN = sorted(p.name for p in HOLOEN.iterdir())[:10]


def character_tree(root, per_character=6):
    for name in TEN:
        (root / name).mkdir(parents=True)
        for path in crops(name, 0, per_character):
            (root / name / path.name).symlink_to(path)
    return root


def test_train_writes_a_projection_and_its_card_the_same_for_a_seed(tmp_path, capsys):
    tree = character_tree(tmp_path / "faces")
    args = ["train", str(tree), "--name", "mine", "--seed", "3", "--backbone", RANDOM_BACKBONE, "-q"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    first, second = Projection.load(tmp_path / "a" / "mine.npz"), Projection.load(tmp_path / "b" / "mine.npz")
    assert first.sha256 == second.sha256, "the same data and seed give the same file"
    card = json.loads((tmp_path / "a" / "mine.json").read_text())
    assert card["seed"] == 3 and card["backbone_id"] == RANDOM_BACKBONE and card["characters"] == 10
    # the bank's characters by their folders' names, so a gallery enrolling one of them can tell
    assert first.stranger_names == TEN and sorted(set(first.stranger_characters)) == list(range(10))
    assert card["command"].startswith("animeface train ") and "--seed 3" in card["command"]
    measured = card["left_out_characters_top1"]["trained"]
    assert measured["5 shots"] is not None and measured["20 shots"] is None, "6 pictures each: 20 shots unmeasurable"
    assert "not measured" in out
    top1 = card["left_out_characters_top1"]
    assert f"5 shots: {top1['untrained']['5 shots']:.1%} -> {top1['trained']['5 shots']:.1%}" in out
    loses = any(v is not None and top1["trained"][k] < v for k, v in top1["untrained"].items())
    assert ("names characters it never saw worse than the untrained embedder" in err) == loses


def test_train_refuses_too_few_characters_before_embedding_and_says_the_minimum(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_CACHE", str(tmp_path / "cache"))
    tree = character_tree(tmp_path / "faces", per_character=2)
    (tmp_path / "faces" / TEN[0]).rename(tmp_path / "faces" / ".left-out")  # 9 characters
    assert main(["train", str(tree), "--out", str(tmp_path / "out"), "--backbone", RANDOM_BACKBONE, "-q"]) == 1
    err = capsys.readouterr().err
    assert "at least 10 characters" in err and "found 9" in err and "nothing was embedded" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "at least 10 characters" in capsys.readouterr().out


def test_a_trained_projection_names_faces_through_the_recognizer(tmp_path):
    tree = character_tree(tmp_path / "faces")
    assert main(["train", str(tree), "--out", str(tmp_path / "p"), "--backbone", RANDOM_BACKBONE, "-q"]) == 0
    rec = animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, projection=tmp_path / "p" / "projection.npz",
                               progress=False)
    for name in TEN[:3]:
        rec.enroll(name, crops(name, 0, 4), faces="whole")
    vectors = rec.embedder.embed(np.zeros((1, 299, 299, 3), np.uint8))
    assert vectors.shape == (1, rec.embedder.dim) == (1, rec.embedder.projection.matrix.shape[1])
    rec.save()
    assert animeface.Recognizer.open(tmp_path / "g", backbone=RANDOM_BACKBONE,
                                     projection=tmp_path / "p" / "projection.npz").characters == {n: 4 for n in TEN[:3]}


def test_train_refuses_to_overwrite(tmp_path, capsys):
    tree = character_tree(tmp_path / "faces", per_character=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "projection.json").write_text("mine")
    assert main(["train", str(tree), "--out", str(tmp_path / "out"), "--backbone", RANDOM_BACKBONE, "-q"]) == 1
    assert (tmp_path / "out" / "projection.json").read_text() == "mine"
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../x", "ABSOLUTE", "", ".", "..", "a/b"])
def test_train_refuses_a_name_that_is_not_a_plain_file_name_before_any_work(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("ANIMEFACE_CACHE", str(tmp_path / "cache"))
    tree = character_tree(tmp_path / "faces", per_character=1)
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name
    out = tmp_path / "work" / "out"
    assert main(["train", str(tree), "--out", str(out), "--name", name, "--backbone", RANDOM_BACKBONE, "-q"]) == 2
    assert "--name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"], "nothing written anywhere, not even a cache"


def test_train_with_out_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_CACHE", str(tmp_path / "cache"))
    tree = character_tree(tmp_path / "faces", per_character=1)
    (tmp_path / "out").write_text("mine")
    assert main(["train", str(tree), "--out", str(tmp_path / "out"), "--backbone", RANDOM_BACKBONE, "-q"]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert (tmp_path / "out").read_text() == "mine" and not (tmp_path / "cache").exists()
