"""`animeface evaluate` end to end on a tiny folder of symlinks into the shared face crops."""

import json

import numpy as np
import pytest

from animeface.cli import main
from animeface.evaluate import embed_pictures, enroll_vectors, evaluate
from animeface.recognizer import Recognizer

from conftest import CASCADE, RANDOM_BACKBONE, crops

PER_CHARACTER = 6
SHOTS = 3


@pytest.fixture
def tiny_root(tmp_path, shared_data):
    """Three characters, six crops each, as symlinks (the shared files are never copied)."""
    root = tmp_path / "root"
    for name in ("gura", "calli", "kiara"):
        (root / name).mkdir(parents=True)
        for src in crops(name, 0, PER_CHARACTER):
            (root / name / src.name).symlink_to(src)
    return root


def test_evaluate_json_is_self_consistent(tiny_root, tmp_path, capsys):
    code = main(["evaluate", str(tiny_root), "--shots", str(SHOTS), "--unknown", "1", "--faces", "whole",
                 "--backbone", RANDOM_BACKBONE, "--cascade", str(CASCADE), "--json", "-q",
                 "--plots", str(tmp_path / "plots")])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # two known characters keep 6 - 3 pictures each; the stranger's 6 are all tested
    assert result["n_test"] == 2 * (PER_CHARACTER - SHOTS) + PER_CHARACTER
    assert result["n_test_strangers"] == PER_CHARACTER
    assert result["top1_ci"][0] <= result["top1"] <= result["top1_ci"][1]
    assert result["top1"] <= result["top1_closed_set"]  # an unknown answer can only lose
    from animeface.evaluate import format_report

    headline = format_report(result).splitlines()[2]  # after the settings and the counts, before the table
    assert f"known faces named right {100 * result['top1']:.1f}%" in headline
    assert f"strangers falsely named {100 * result['false_accept']:.1f}%" in headline
    for key in ("top1", "macro_f1", "auroc_unknown", "unknown_rejected", "false_accept", "calibration_error"):
        assert 0.0 <= result[key] <= 1.0, key
    # the reliability diagram's bins hold every test picture with a face, each bin's figures in [0, 1]
    assert sum(row["n"] for row in result["reliability"]) == result["n_test"] - result["n_no_face"]
    assert all(0.0 <= row["confidence"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0 for row in result["reliability"])
    assert result["unknown_rejected"] + result["false_accept"] == pytest.approx(1.0)
    assert sum(row["n"] for row in result["per_class"].values()) == result["n_test_known"]
    assert result["threshold"]["source"] == "calibrated"
    written = {p.name for p in (tmp_path / "plots").iterdir()}
    assert {"confusion.png", "roc_unknown.png", "scores.png", "reliability.png", "accuracy_coverage.png"} <= written


def test_enrolling_from_vectors_matches_enroll(tiny_root, tmp_path):
    """The evaluation's gallery equals the one Recognizer.enroll builds from the same files."""
    kwargs = dict(backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    public = Recognizer(tmp_path / "public", **kwargs)
    fast = Recognizer(tmp_path / "fast", **kwargs)
    folders = {name: sorted((tiny_root / name).iterdir())[:SHOTS] for name in ("gura", "calli")}
    pictures = embed_pictures(fast, folders, "whole")
    for name, files in folders.items():
        public.enroll(name, files, faces="whole")
        enroll_vectors(fast, name, [p for p in pictures if p.character == name])
    fast._refit()
    assert fast.gallery.labels == public.gallery.labels
    assert [e["sha256"] for e in fast.gallery.entries] == [e["sha256"] for e in public.gallery.entries]
    np.testing.assert_allclose(fast.gallery.vectors, public.gallery.vectors, atol=1e-5)
    assert fast.threshold == pytest.approx(public.threshold, abs=1e-4)
    probe = pictures[0].vectors
    np.testing.assert_allclose(fast.head.predict_proba(probe), public.head.predict_proba(probe), atol=1e-3)


def test_evaluate_refuses_folders_too_small_for_the_shots(tiny_root):
    from animeface import AnimefaceError

    with pytest.raises(AnimefaceError, match="needs more than"):
        evaluate(tiny_root, shots=PER_CHARACTER, faces="whole", backbone=RANDOM_BACKBONE, cascade=CASCADE)


def test_evaluate_suggests_the_shots_a_folder_allows(tiny_root, capsys):
    code = main(["evaluate", str(tiny_root), "--backbone", RANDOM_BACKBONE, "-q"])  # the default, 10 shots
    err = capsys.readouterr().err
    assert code == 1 and f"try --shots {PER_CHARACTER - 1}" in err
