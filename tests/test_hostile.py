"""Hostile input and data loss: each break found by the attack run of issue 11, as a test.

Sorting never loses, overwrites or writes outside DST; a gallery from someone else
loads or fails with one GalleryError naming the file and field; bad input is one
clear message, and the run carries on.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import animeface
from animeface import files, models
from animeface.cli import EXIT_SOME_FAILED, main
from animeface.detect import Detector
from animeface.gallery import Gallery
from animeface.io import load_image
from animeface.sort import SortError, sort_folder, undo

from conftest import CASCADE, RANDOM_BACKBONE, ROOT, crops
from test_sort import plain_png, put, tree


@pytest.fixture
def empty_rec(tmp_path):
    """An empty gallery, saved, so that the command line can open it too."""
    rec = animeface.Recognizer(tmp_path / "empty-gallery", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    rec.save()
    return rec


@pytest.fixture
def plain_src(tmp_path):
    """Three faceless pictures (they go to _noface/, so no embedding is needed)."""
    src = tmp_path / "src"
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        put(src / f"p{i}.png", plain_png(colour))
    return src


# -- 1. a gallery saved over a folder that is not a gallery ---------------------------


def test_enroll_into_a_folder_of_pictures_refuses_and_deletes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    photos, backup = tmp_path / "Photos", tmp_path / "Photos.old"
    put(photos / "holiday.png", plain_png((1, 2, 3)))
    put(backup / "older.png", plain_png((4, 5, 6)))
    before = tree(tmp_path)
    face = crops("gura", 0, 1)[0]
    assert main(["enroll", "gura", str(face), "--faces", "whole", "--gallery", str(photos), "-q"]) == 1
    assert "not a gallery folder" in capsys.readouterr().err
    assert tree(tmp_path) == before
    shutil.rmtree(photos)  # the folder gone, its sibling Photos.old still in the way
    assert main(["enroll", "gura", str(face), "--faces", "whole", "--gallery", str(photos), "-q"]) == 1
    assert (backup / "older.png").is_file()


def test_a_save_over_an_empty_folder_or_a_gallery_works_and_cleans_a_killed_saves_leftovers(gallery_copy):
    gallery, head, description = Gallery.load(gallery_copy)
    killed = gallery_copy.parent / ".gallery.k1ll3d00.animeface-tmp"  # a save killed half-way
    killed.mkdir()
    (killed / "gallery.json").write_text("{}")
    lookalike = gallery_copy.parent / ".gallery.abcdefgh.animeface-tmp"  # a user's folder, named like ours
    put(lookalike / "mine.txt", b"keep me")
    gallery.save(gallery_copy, head, {"calibration": description["calibration"]})
    assert not killed.exists() and (lookalike / "mine.txt").read_bytes() == b"keep me"
    empty = gallery_copy.parent / "empty"
    empty.mkdir()
    gallery.save(empty, head)
    assert Gallery.load(empty)[0].characters == gallery.characters


# -- 2, 3. concurrent sorts, and a user's file named like a temporary one ---------------


def test_a_second_sort_or_undo_into_the_same_dst_is_refused_while_one_runs(plain_src, tmp_path, empty_rec, monkeypatch):
    dst, other = tmp_path / "sorted", tmp_path / "other-src"
    put(other / "q.png", plain_png((9, 9, 9)))
    before = tree(plain_src)
    refusals = []
    real = empty_rec.name_faces

    def meanwhile(vectors, boxes):  # while the first run is placing files, a second one starts
        for attempt in (lambda: sort_folder(empty_rec, other, dst), lambda: undo(dst)):
            with pytest.raises(SortError, match="another sort or undo into this folder is running") as err:
                attempt()
            refusals.append(str(err.value))
        return real(vectors, boxes)

    monkeypatch.setattr(empty_rec, "name_faces", meanwhile)
    sort_folder(empty_rec, plain_src, dst, move=True, jobs=1)
    assert len(refusals) >= 2
    assert sorted(tree(dst).values()) == sorted(before.values()), "the first run's files all arrived"
    assert tree(other) and tree(plain_src) == {}
    undo(dst)
    assert tree(plain_src) == before


def test_two_writers_of_one_name_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "a.png"

    def first(fh):
        fh.write(b"first, ")
        files.write_file(target, lambda other: other.write(b"second"))  # interleaves with the first
        fh.write(b"still first")

    with pytest.raises(FileExistsError):
        files.write_file(target, first)
    assert target.read_bytes() == b"second" and os.listdir(tmp_path) == ["a.png"]


def test_a_users_file_named_like_a_temporary_file_is_never_touched(plain_src, tmp_path, empty_rec):
    dst = tmp_path / "sorted"
    for folder in (dst / "_noface", plain_src):
        put(folder / ".p0.png.animeface-tmp", b"the user's own file")
    sort_folder(empty_rec, plain_src, dst, move=True)
    undo(dst)
    for folder in (dst / "_noface", plain_src):
        assert (folder / ".p0.png.animeface-tmp").read_bytes() == b"the user's own file"


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(plain_src, tmp_path, empty_rec):
    dst = tmp_path / "sorted"
    sort_folder(empty_rec, plain_src, dst, move=True)
    killed = [plain_src / ".p1.png.x9y8z7w6.animeface-tmp", dst / "_noface" / ".p2.png.a1b2c3d4.animeface-tmp"]
    for path in killed:  # an undo, and a sort, killed while writing
        put(path, b"half a pic")
    undo(dst)
    assert not any(p.exists() for p in killed)
    assert sorted(p.name for p in plain_src.iterdir()) == ["p0.png", "p1.png", "p2.png"]


# -- 4. a second run that did nothing, then --undo ------------------------------------


def test_undo_after_a_run_that_did_nothing_reverses_the_run_that_acted(plain_src, tmp_path, empty_rec):
    dst = tmp_path / "sorted"
    sort_folder(empty_rec, plain_src, dst)
    cards = (dst / ".animeface" / "report.html").read_text().split("<h2")[1:]
    again = sort_folder(empty_rec, plain_src, dst)
    assert again.copied == 0 and again.identical == 3
    page = (dst / ".animeface" / "report.html").read_text()
    assert "copied 0, already there 3" in page, "the report is rewritten, and says what this run did"
    assert [c.replace(" (already there)", "") for c in page.split("<h2")[1:]] == cards, "every file where it was"
    assert undo(dst).removed == 3
    assert tree(dst) == {}


# -- 5. a gallery whose names lead outside DST -------------------------------------------


@pytest.mark.parametrize("label", ["../../x", "/tmp/abs", "a/b", "_unknown", ".hidden", "x" * 300, " gura"])
def test_a_gallery_with_a_name_that_is_no_plain_folder_name_is_refused(gallery_copy, label):
    path = gallery_copy / "gallery.json"
    description = json.loads(path.read_text())
    for e in description["entries"]:
        if e["label"] == "gura":
            e["label"] = label
    description["labels"] = [label if name == "gura" else name for name in description["labels"]]
    path.write_text(json.dumps(description))
    with pytest.raises(animeface.GalleryError, match=r"gallery.json.*labels\[0\]"):
        animeface.Recognizer.open(gallery_copy, backbone=RANDOM_BACKBONE)


def test_sort_writes_nothing_outside_dst_whatever_the_names_or_links(plain_src, tmp_path, empty_rec, monkeypatch):
    dst, outside = tmp_path / "sorted", tmp_path / "outside"
    outside.mkdir()
    (dst / "gura").parent.mkdir(parents=True)
    (dst / "gura").symlink_to(outside)  # a folder in DST that leads elsewhere
    names = iter(["../escaped", "gura", str(outside)])
    monkeypatch.setattr(empty_rec, "face_crops", lambda rgb, faces: ([animeface.Box(0, 0, 9, 9)], [None]))
    monkeypatch.setattr(empty_rec.embedder, "embed", lambda crops: np.zeros((len(crops), 4), np.float32))
    monkeypatch.setattr(empty_rec, "name_faces", lambda v, boxes: [animeface.Face(b, next(names), 0.9) for b in boxes])
    summary = sort_folder(empty_rec, plain_src, dst, jobs=1)
    assert os.listdir(outside) == [] and not (tmp_path / "escaped").exists()
    assert len(summary.left) == 3 and all("leads outside" in why for _, why in summary.left)


# -- 6, 9. FIFOs, devices and links in SRC -----------------------------------------------


def test_special_files_in_src_are_skipped_with_a_reason(plain_src, tmp_path, empty_rec, capsys):
    os.mkfifo(plain_src / "pipe.jpg")
    os.mkfifo(plain_src / "pipe-no-suffix")
    (plain_src / "zero.jpg").symlink_to("/dev/zero")
    (plain_src / "link.png").symlink_to(plain_src / "p0.png")  # a link to a sibling, then --move
    dst = tmp_path / "sorted"
    assert main(["sort", str(plain_src), str(dst), "--move", "--gallery", str(empty_rec.path),
                 "--backbone", RANDOM_BACKBONE, "-q"]) == EXIT_SOME_FAILED
    out = capsys.readouterr().out
    assert "pipe.jpg: not a regular file but a FIFO" in out and "pipe-no-suffix: not a regular file but a FIFO" in out
    assert "zero.jpg: not a regular file but a symbolic link" in out and "link.png: not a regular file" in out
    assert sorted(os.listdir(plain_src)) == ["link.png", "pipe-no-suffix", "pipe.jpg", "zero.jpg"]
    assert sorted(tree(dst)) == ["_noface/p0.png", "_noface/p1.png", "_noface/p2.png"]
    assert main(["sort", "--undo", str(dst), "-q"]) == 0
    assert (plain_src / "link.png").read_bytes() == (plain_src / "p0.png").read_bytes()


def test_loading_a_device_or_a_fifo_is_an_image_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(animeface.ImageError, match="FIFO"):
        load_image(tmp_path / "pipe.png")
    with pytest.raises(animeface.ImageError, match="character device"):
        load_image(tmp_path / "zero.jpg")


# -- 7. long names and names that are not UTF-8 --------------------------------------------


def test_long_and_undecodable_names_are_sorted_and_put_back_byte_for_byte(tmp_path, empty_rec, capsys):
    src, dst = tmp_path / "src", tmp_path / "sorted"
    long_name = "長" * 83 + ".jpeg"  # 254 bytes: a '-1' beside it must be shortened
    put(src / "a" / long_name, plain_png((1, 1, 1)))
    put(src / "b" / long_name, plain_png((2, 2, 2)))
    put(src / ("x" * 245 + ".png"), plain_png((3, 3, 3)))
    raw = os.fsencode(src) + b"/caf\xe9-\xff.png"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as fh:
        fh.write(plain_png((4, 4, 4)))
    before = tree(src)
    assert main(["sort", str(src), str(dst), "--move", "--gallery", str(empty_rec.path),
                 "--backbone", RANDOM_BACKBONE]) == 0
    assert tree(src) == {} and sorted(tree(dst).values()) == sorted(before.values())
    assert all(len(os.fsencode(name)) <= 255 for name in os.listdir(dst / "_noface"))
    assert os.path.exists(os.fsencode(dst) + b"/_noface/caf\xe9-\xff.png")
    assert main(["sort", "--undo", str(dst)]) == 0
    assert tree(src) == before and os.path.exists(raw)
    capsys.readouterr()


# -- 8. a character name too long for a folder --------------------------------------------


def test_a_name_too_long_for_a_folder_is_refused_at_enroll(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    face = crops("gura", 0, 1)[0]
    assert main(["enroll", "x" * 300, str(face), "--faces", "whole", "--gallery", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("animeface: error: character name") and "limit is 200" in err
    with pytest.raises(ValueError):
        animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE).enroll("é" * 101, [face])


# -- 10, 11. read-only DST, unreadable files (file permissions: never as root) ---------------


def run_cli(args, home: Path):
    """The command line in a fresh process that file permissions apply to (as root: without the
    capabilities that override them), on an empty gallery."""
    if not Gallery.exists(home / "gallery"):
        animeface.Recognizer(home / "gallery", backbone=RANDOM_BACKBONE).save()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANIMEFACE_HOME": str(home / "gallery"),
           "ANIMEFACE_CASCADE": str(CASCADE),
           "ANIMEFACE_BACKBONE": RANDOM_BACKBONE}
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root: file permissions only apply through setpriv, which is missing")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", caps, "--inh-caps", caps]
    return subprocess.run([*prefix, sys.executable, "-m", "animeface", *map(str, args), "-q"], env=env, cwd=home,
                          capture_output=True, text=True)


def test_a_read_only_dst_is_a_clear_error(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "sorted"
    put(src / "p.png", plain_png((5, 5, 5)))
    dst.mkdir()
    dst.chmod(0o555)
    result = run_cli(["sort", src, dst], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"animeface: error: {dst}: cannot write there (Permission denied)" in result.stderr
    assert os.listdir(dst) == [] and (src / "p.png").is_file()


def test_an_unreadable_file_is_named_and_identify_and_detect_carry_on(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "secret.png"
    put(good, plain_png((6, 6, 6)))
    put(bad, plain_png((7, 7, 7)))
    bad.chmod(0o000)
    result = run_cli(["identify", bad, good, "--faces", "detect"], tmp_path)
    assert result.returncode == EXIT_SOME_FAILED and "Traceback" not in result.stderr
    assert f"{bad}: cannot read the file (Permission denied)" in result.stderr
    assert f"{good}: no face" in result.stdout
    out = tmp_path / "out"
    result = run_cli(["detect", bad, good, "--out", out], tmp_path)
    assert "Traceback" not in result.stderr and f"{bad}: cannot read the file (Permission denied)" in result.stderr
    assert result.returncode == EXIT_SOME_FAILED and os.listdir(out) == ["good.png"]


# -- 12. tampered gallery files ---------------------------------------------------------------


def edit_json(change):
    def tamper(folder):
        path = folder / "gallery.json"
        description = json.loads(path.read_text())
        change(description)
        path.write_text(json.dumps(description))
    return tamper


def npy_claiming(shape):
    def tamper(folder):
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        (folder / "vectors.npy").write_bytes(buf.getvalue() + b"\0" * 64)
    return tamper


def replace_head(**arrays):
    def tamper(folder):
        with np.load(folder / "head.npz") as npz:
            head = {k: npz[k] for k in npz.files}
        head.update(arrays)
        np.savez(folder / "head.npz", **head)
    return tamper


TAMPERINGS = {
    "labels of the wrong type": (edit_json(lambda d: d.update(labels=[1, 2])), "labels"),
    "entries missing": (edit_json(lambda d: d.pop("entries")), "entries"),
    "dimension as text": (edit_json(lambda d: d.update(embedding_dim="2120")), "embedding_dim"),
    "preprocessing a list": (edit_json(lambda d: d.update(preprocessing=[299])), "preprocessing"),
    "input size of 20000": (edit_json(lambda d: d["preprocessing"]["recipe"].update(input_size=20000)),
                            "preprocessing.recipe.*input_size"),
    "calibration of another shape": (edit_json(lambda d: d.update(calibration={"x": 1})), "calibration"),
    "calibration weights no fit gives": (edit_json(lambda d: d["calibration"].update(weights=[-100, -100, -100])),
                                         "calibration"),
    "calibration spread negative": (edit_json(lambda d: d["calibration"].update(stranger_spread=-1.0)), "calibration"),
    "calibration by rule 0": (edit_json(lambda d: d["calibration"].update(rule=0)), "calibration"),
    "calibration rule a truth value": (edit_json(lambda d: d["calibration"].update(rule=True)), "calibration"),
    "calibration rule as text": (edit_json(lambda d: d["calibration"].update(rule="2")), "calibration"),
    "an entry's sha256": (edit_json(lambda d: d["entries"][3].update(sha256=None)), r"entries\[3\].sha256"),
    # issue 19, break 8: a box no picture could hold
    "an entry's box past any picture": (edit_json(lambda d: d["entries"][2].update(box=[0, 0, 1, 10 ** 9])),
                                        r"entries\[2\].box"),
    "an entry's turn as text": (edit_json(lambda d: d["entries"][1].update(angle="__import__('os')")),
                                r"entries\[1\].angle"),
    "an entry's turn past a half circle": (edit_json(lambda d: d["entries"][1].update(angle=1e308)),
                                           r"entries\[1\].angle"),
    "deeply nested JSON": (lambda f: (f / "gallery.json").write_text("[" * 100_000 + "]" * 100_000), "RecursionError"),
    "not JSON": (lambda f: (f / "gallery.json").write_bytes(b"\xff\xfe{"), "gallery.json"),
    "head not a zip": (lambda f: (f / "head.npz").write_bytes(b"PK\3\4 garbage"), "BadZipFile"),
    "head missing": (lambda f: (f / "head.npz").unlink(), "head.npz: damaged gallery: the file is missing"),
    "head of the wrong shape": (replace_head(coef=np.zeros((5, 4), np.float32)), "head.npz: damaged gallery: the array"),
    "head classes not the labels": (replace_head(classes=np.array(["a", "b", "c", "d"])), "classes"),
    "head with a pickle": (replace_head(penalty=np.array([{"x": 1}], dtype=object)), "head.npz"),
    "vectors claiming 78 TiB": (npy_claiming((2 ** 40, 20000)), "vectors.npy: damaged gallery: the array"),
    "vectors cut short": (lambda f: (f / "vectors.npy").write_bytes((f / "vectors.npy").read_bytes()[:-7]),
                          "vectors.npy: damaged gallery: the array data"),
    "vectors holding NaN": (lambda f: np.save(f / "vectors.npy", np.full(np.load(f / "vectors.npy").shape, np.nan,
                                                                        np.float32)), "NaN"),
}


@pytest.mark.parametrize("how", TAMPERINGS)
def test_a_tampered_gallery_is_one_gallery_error_naming_file_and_field(gallery_copy, how):
    tamper, field = TAMPERINGS[how]
    tamper(gallery_copy)
    with pytest.raises(animeface.GalleryError, match=field) as err:
        animeface.Recognizer.open(gallery_copy, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    assert str(gallery_copy) in str(err.value)


def test_a_corrupt_faiss_index_is_not_read(gallery_copy):
    (gallery_copy / "index.faiss").write_bytes(b"IxFI" + os.urandom(200))
    rec = animeface.Recognizer.open(gallery_copy, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    vector = rec.gallery.vectors[:1]
    assert rec.name_faces(vector, [animeface.Box(0, 0, 9, 9)])[0].candidates


def test_fuzzed_galleries_load_or_give_a_gallery_error(gallery_copy, tmp_path):
    """Seeded mutations of a real saved gallery: each one loads (and then names a face without
    crashing) or is refused with a GalleryError; nothing else comes out."""
    rng = np.random.default_rng(11)
    originals = {name: (gallery_copy / name).read_bytes() for name in ("gallery.json", "vectors.npy", "head.npz")}
    probe = np.load(gallery_copy / "vectors.npy")[:2]
    values = [None, True, -1, 0, 2 ** 70, 1e308, -0.5, "", "../x", "é" * 300, [], {}, [[[]]], {"a": [1]}, "gura"]
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(400):
        target = tmp_path / f"g{trial}"
        target.mkdir()
        for name, data in originals.items():
            (target / name).write_bytes(data)
        kind = trial % 3
        if kind == 0:  # a JSON value replaced or removed, anywhere in the tree
            mutated = json.loads(originals["gallery.json"])
            node, key = _random_slot(mutated, rng)
            if rng.random() < 0.2 and isinstance(node, dict):
                node.pop(key)
            else:
                node[key] = values[rng.integers(len(values))]
            (target / "gallery.json").write_text(json.dumps(mutated))
        else:  # bytes of an array file flipped, cut or grown
            name = ("vectors.npy", "head.npz")[kind - 1]
            data = bytearray(originals[name])
            for _ in range(rng.integers(1, 6)):
                data[rng.integers(min(len(data), 300))] = rng.integers(256)  # mostly headers
            if rng.random() < 0.3:
                data = data[:rng.integers(len(data))]
            (target / name).write_bytes(bytes(data))
        try:
            rec = animeface.Recognizer.open(target, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
        except animeface.GalleryError:
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
            rec.name_faces(probe, [animeface.Box(0, 0, 9, 9)] * 2)
        shutil.rmtree(target)
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 10, outcomes


def _random_slot(tree, rng):
    """A random (container, key) inside a JSON tree."""
    node = tree
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = keys[rng.integers(len(keys))]
        child = node[key]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.7:
            node = child
            continue
        return node, key


# -- 13. a cascade file that is not one ---------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"<?xml version='1.0'?><foo>bar</foo>", b"garbage",
                                     b"<?xml version='1.0'?><opencv_storage><cascade>x</cascade></opencv_storage>"])
def test_a_cascade_file_that_is_not_one_is_a_model_error(tmp_path, content):
    path = tmp_path / "cascade.xml"
    path.write_bytes(content)
    with pytest.raises(animeface.ModelError, match="not a cascade file"):
        Detector("cascade", cascade=path)


# -- 14. decoding memory ---------------------------------------------------------------------------


def test_a_tiny_file_of_too_many_pixels_is_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("ANIMEFACE_MAX_PIXELS", "1000000")
    Image.new("1", (2000, 1000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 10_000
    with pytest.raises(animeface.ImageError, match="2000x1000 pixels is over the limit"):
        load_image(tmp_path / "bomb.png")


# -- 15. a download longer than the manifest says --------------------------------------------------


def test_a_download_stops_at_the_manifests_size(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMEFACE_CACHE", str(tmp_path / "cache"))
    size = models.manifest()["lbpcascade_animeface"].size
    served = []

    class Endless:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def read(self, n):
            served.append(n)
            return b"x" * n

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Endless())
    with pytest.raises(animeface.ModelError, match="larger than the manifest"):
        models.fetch("lbpcascade_animeface", progress=False)
    assert sum(served) == size + 1
    assert list((tmp_path / "cache").iterdir()) == []


# -- issue 19 ----------------------------------------------------------------------------------------


def test_a_web_enroll_with_a_long_file_name_saves_a_gallery_that_opens_again(gallery_copy):
    from animeface.serve import Service

    service = Service(animeface.Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False))
    service.enroll("gura", crops("gura", 20, 1)[0].read_bytes(), "x" * 4090 + ".png", None)
    assert animeface.Recognizer.open(gallery_copy, backbone=RANDOM_BACKBONE).characters["gura"] == 7


@pytest.mark.parametrize("spoil, field", [
    (lambda g: g.entries[0].update(source="x" * 5000), r"entries\[0\]\.source"),
    (lambda g: g.entries[3].update(sha256="not a digest"), r"entries\[3\]\.sha256"),
    (lambda g: g.vectors.__setitem__((1, 0), np.nan), "NaN or infinite"),
    (lambda g: g.vectors.__setitem__((2, 5), np.inf), "NaN or infinite"),
])
def test_a_save_never_writes_what_load_refuses(gallery_copy, spoil, field):
    gallery, head, description = Gallery.load(gallery_copy)
    before = tree(gallery_copy.parent)
    spoil(gallery)
    with pytest.raises(animeface.GalleryError, match=field):
        gallery.save(gallery_copy, head, {"calibration": description["calibration"]})
    assert tree(gallery_copy.parent) == before
    Gallery.load(gallery_copy)


def tampered_projection(folder: Path, npz: bytes, card: str | None = None) -> Path:
    """folder/p.npz holding npz, and its card (by default one whose sha256 matches it)."""
    import hashlib

    path = folder / "p.npz"
    path.write_bytes(npz)
    card = card or json.dumps({"name": "p", "backbone_id": RANDOM_BACKBONE, "sha256": hashlib.sha256(npz).hexdigest()})
    path.with_suffix(".json").write_text(card)
    return path


def npz_of(**arrays) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in arrays.items():
            archive.writestr(f"{name}.npy", data)
    return buffer.getvalue()


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_header_only(shape) -> bytes:
    """An .npy header claiming shape (float32), followed by 64 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 64


RECIPE = {"layers": ["mixed5"], "pooling": "avg", "power": 0.5, "colour_weight": 0, "input_size": 299, "mirror": False}
BANK = {"strangers": np.eye(4, 8, dtype=np.float32), "stranger_characters": np.array([0, 0, 1, 1], np.int32)}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_projection_whose_mean_is_not_finite_is_refused(tmp_path, bad):
    from animeface.embed import Projection, Recipe

    mean = np.zeros(768, np.float32)
    mean[7] = bad
    path = Projection(mean, np.eye(768, 8, dtype=np.float32), Recipe(**RECIPE), **BANK).save(
        tmp_path / "p", {"name": "p", "backbone_id": RANDOM_BACKBONE})
    with pytest.raises(animeface.ModelError, match=r"p\.npz.*NaN or infinite"):
        animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, projection=path)


def _named_bank(tmp_path, names):
    """A sound projection whose card names its bank's characters by `names` (None: the bank is text)."""
    npz = npz_of(mean=npy_bytes(np.zeros(768, np.float32)), matrix=npy_bytes(np.eye(768, 8, dtype=np.float32)),
                 recipe=npy_bytes(np.array(json.dumps(RECIPE))), **{k: npy_bytes(v) for k, v in BANK.items()})
    import hashlib

    bank = "__import__('os')" if names is None else {"names": names}
    return tampered_projection(tmp_path, npz, json.dumps(
        {"name": "p", "backbone_id": RANDOM_BACKBONE, "sha256": hashlib.sha256(npz).hexdigest(), "stranger_bank": bank}))


def _projection_fifo(tmp_path):
    path = tampered_projection(tmp_path, b"")
    path.unlink()
    os.mkfifo(path)
    return path


PROJECTION_TAMPERINGS = {
    "a huge npz header": lambda tmp: tampered_projection(tmp, npz_of(
        mean=npy_header_only((1 << 40,)), matrix=npy_bytes(np.eye(768, 8, dtype=np.float32)),
        recipe=npy_bytes(np.array(json.dumps(RECIPE))), **{k: npy_bytes(v) for k, v in BANK.items()})),
    "a stranger bank with a huge header": lambda tmp: tampered_projection(tmp, npz_of(
        mean=npy_bytes(np.zeros(768, np.float32)), matrix=npy_bytes(np.eye(768, 8, dtype=np.float32)),
        recipe=npy_bytes(np.array(json.dumps(RECIPE))), strangers=npy_header_only((1 << 40, 8)),
        stranger_characters=npy_bytes(BANK["stranger_characters"]))),
    "a stranger bank of one character": lambda tmp: tampered_projection(tmp, npz_of(
        mean=npy_bytes(np.zeros(768, np.float32)), matrix=npy_bytes(np.eye(768, 8, dtype=np.float32)),
        recipe=npy_bytes(np.array(json.dumps(RECIPE))), strangers=npy_bytes(BANK["strangers"]),
        stranger_characters=npy_bytes(np.zeros(4, np.int32)))),
    "a card nested 100,000 deep": lambda tmp: tampered_projection(tmp, b"PK", "[" * 100_000 + "]" * 100_000),
    "a card naming the bank's characters with numbers": lambda tmp: _named_bank(tmp, [1, 2]),
    "a card naming three characters of a bank of two": lambda tmp: _named_bank(tmp, ["a", "b", "c"]),
    "a card whose stranger bank is text": lambda tmp: _named_bank(tmp, None),
    "a recipe nested 100,000 deep": lambda tmp: tampered_projection(tmp, npz_of(
        mean=npy_bytes(np.zeros(768, np.float32)), matrix=npy_bytes(np.eye(768, 8, dtype=np.float32)),
        recipe=npy_bytes(np.array("[" * 100_000 + "]" * 100_000)), **{k: npy_bytes(v) for k, v in BANK.items()})),
    "a FIFO": _projection_fifo,
}


@pytest.mark.parametrize("how", PROJECTION_TAMPERINGS)
def test_a_tampered_projection_is_one_model_error_naming_it(tmp_path, how):
    from animeface.embed import Projection

    path = PROJECTION_TAMPERINGS[how](tmp_path)
    with pytest.raises(animeface.ModelError, match=rf"{tmp_path}/p\.(npz|json)"):
        Projection.load(path)


def test_evaluate_reads_pictures_as_every_other_verb_does(tmp_path):
    from animeface.evaluate import embed_pictures

    huge = tmp_path / "gura" / "huge.png"
    huge.parent.mkdir()
    with open(huge, "wb") as fh:
        fh.truncate(64 << 30)  # sparse: 64 GB that take no disk
    rec = animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    big, good = embed_pictures(rec, {"gura": [huge, crops("gura", 0, 1)[0]]}, "whole")
    assert "over the file size limit" in big.error and not big.boxes
    assert good.error is None and good.vectors.shape == (1, rec.embedder.dim)


def test_a_pixel_limit_above_pillows_own_is_the_one_that_holds(tmp_path, monkeypatch):
    from PIL import Image

    from animeface.io import image_pixels

    buffer = io.BytesIO()
    Image.new("1", (15000, 12000)).save(buffer, "PNG")  # 180 million pixels, a few kilobytes
    monkeypatch.setenv("ANIMEFACE_MAX_PIXELS", "200000000")
    assert image_pixels(buffer.getvalue(), "big.png") == 180_000_000
    monkeypatch.setenv("ANIMEFACE_MAX_PIXELS", "100000000")
    with pytest.raises(animeface.ImageError, match="15000x12000 pixels is over the limit of 100000000"):
        image_pixels(buffer.getvalue(), "big.png")


def test_report_csv_never_lets_a_cell_start_a_formula(tmp_path):
    import csv

    name = '=HYPERLINK("evil.example","open")'
    rec = animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    rec.enroll(name, crops("gura", 0, 3), faces="whole")
    src, dst = tmp_path / "src", tmp_path / "sorted"
    for path in crops("gura", 0, 3):
        put(src / path.name, path.read_bytes())
    put(src / "-2+3.png", plain_png((1, 2, 3)))
    put(src / "@x.png", b"not a picture")
    sort_folder(rec, src, dst, faces="auto", jobs=1)
    with open(dst / ".animeface" / "report.csv", newline="", encoding="utf-8") as fh:
        cells = [cell for row in csv.reader(fh) for cell in row]
    assert "'" + name in cells, "the name is kept, behind a quote"
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]


def test_enroll_into_a_read_only_folder_says_the_error_and_no_success(tmp_path):
    home = tmp_path / "home"
    animeface.Recognizer(home / "gallery", backbone=RANDOM_BACKBONE).save()
    home.chmod(0o555)
    try:
        result = run_cli(["enroll", "gura", *crops("gura", 0, 3), "--faces", "whole"], home)
    finally:
        home.chmod(0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Permission denied" in result.stderr and "enrolled" not in result.stdout
    assert animeface.Recognizer.open(home / "gallery", backbone=RANDOM_BACKBONE).characters == {}


# -- issue 19, break 6: PostScript handed to Ghostscript -----------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
       b"newpath 0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n")


def test_postscript_is_refused_by_its_format_and_no_interpreter_is_started(tmp_path):
    """PostScript named .jpg went to Ghostscript (through Pillow) in every command and /api/identify. Only
    raster formats are decoded now; anything else is one error naming the file and its format, and no
    program is started (a stand-in `gs` on PATH would leave a mark)."""
    marker, tools = tmp_path / "gs-was-run", tmp_path / "bin"
    tools.mkdir()
    (tools / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (tools / "gs").chmod(0o755)
    src = tmp_path / "src"
    put(src / "drawing.jpg", EPS)
    put(src / "p.png", plain_png((9, 9, 9)))
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "ANIMEFACE_CASCADE": str(CASCADE), "ANIMEFACE_BACKBONE": RANDOM_BACKBONE}
    animeface.Recognizer(tmp_path / "gallery", backbone=RANDOM_BACKBONE).save()
    for args in (["detect", src / "drawing.jpg", src / "p.png", "--out", tmp_path / "out"],
                 ["sort", src, tmp_path / "sorted", "--gallery", tmp_path / "gallery"]):
        result = subprocess.run([sys.executable, "-m", "animeface", *map(str, args), "-q"], env=env,
                                capture_output=True, text=True)
        assert result.returncode == EXIT_SOME_FAILED and "Traceback" not in result.stderr, result.stderr
        assert "drawing.jpg" in result.stderr + result.stdout and "EPS content" in result.stderr + result.stdout, args
    with pytest.raises(animeface.ImageError, match=r"drawing.jpg: EPS content, not a picture format read here "
                                                   r"\(JPEG, PNG, WEBP, GIF, BMP, TIFF\)"):
        load_image(src / "drawing.jpg")
    assert not marker.exists(), "Ghostscript was started on an uploaded file"
