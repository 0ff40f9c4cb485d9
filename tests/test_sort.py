"""animeface sort: a messy downloads folder is sorted without losing, changing or overwriting a file.

Most tests use an empty gallery, so that where each picture goes does not hang on
what a random-weight backbone makes of it: every face is unknown, pictures with
faces go to _unknown/, the rest to _noface/. The safety properties are the same.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from itertools import cycle

import numpy as np

import pytest
from PIL import Image

import animeface
from animeface.cli import EXIT_SOME_FAILED, main
from animeface.sort import SortError, sort_folder, undo

from conftest import CASCADE, RANDOM_BACKBONE, ROOT, crops

UNREADABLE = {"empty.jpg", "truncated.jpg", "text.png", "notes.txt"}



def interrupted_after(calls: int, real):
    """real, until it has been called `calls` times; then KeyboardInterrupt, as a user's Ctrl+C."""
    made = []

    def wrapper(*args):
        made.append(1)
        if len(made) > calls:
            raise KeyboardInterrupt
        return real(*args)

    return wrapper

def tree(root) -> dict[str, str]:
    """Relative path -> sha256 of every file under root, leaving out sort's own .animeface folder."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".animeface" not in path.relative_to(root).parts:
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def put(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def plain_png(colour) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    Image.new("RGB", (320, 240), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def messy(tmp_path, shared_data):
    """Nested folders, one name in two folders, a duplicate, unreadable files, a Japanese name with spaces."""
    src = tmp_path / "downloads"
    gura, calli = crops("gura", 30, 1)[0].read_bytes(), crops("calli", 30, 1)[0].read_bytes()
    put(src / "a" / "face.jpg", gura)
    put(src / "b" / "deep" / "copy of face.jpg", gura)
    put(src / "日本 語" / "カリ pic 1.jpg", calli)
    put(src / "a" / "plain.png", plain_png((200, 30, 30)))
    put(src / "b" / "plain.png", plain_png((30, 30, 200)))
    put(src / "empty.jpg", b"")
    put(src / "b" / "truncated.jpg", gura[:2000])
    put(src / "a" / "text.png", b"this is not a picture\n")
    put(src / "notes.txt", b"my notes\n")
    return src


@pytest.fixture
def empty_rec(tmp_path):
    return animeface.Recognizer(tmp_path / "empty-gallery", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)


def test_dry_run_changes_nothing_and_says_what_a_real_run_does(messy, tmp_path, empty_rec):
    before, dst = tree(messy), tmp_path / "sorted"
    planned, done = [], []
    summary = sort_folder(empty_rec, messy, dst, dry_run=True, log=planned.append)
    assert not dst.exists() and tree(messy) == before
    assert summary.dry_run and len(summary.left) == len(UNREADABLE)
    sort_folder(empty_rec, messy, dst, log=done.append)
    assert planned == done
    copied = {line.split(" -> ")[1] for line in done if line.startswith("copy ")}
    assert copied == {str(dst / p) for p in tree(dst)}


def test_copy_sorts_every_picture_and_leaves_the_source_byte_for_byte(messy, tmp_path, empty_rec):
    before, dst = tree(messy), tmp_path / "sorted"
    summary = sort_folder(empty_rec, messy, dst)
    assert tree(messy) == before
    sorted_files = tree(dst)
    assert {p.split("/")[0] for p in sorted_files} <= {"_unknown", "_noface"}
    # Every readable picture arrived; the two different plain.png both kept under free names; the
    # duplicate picture was not written a second time into the same folder.
    pictures = {sha for path, sha in before.items() if path.rsplit("/", 1)[-1] not in UNREADABLE}
    assert set(sorted_files.values()) == pictures
    assert sorted(p for p in sorted_files if "plain" in p) == ["_noface/plain-1.png", "_noface/plain.png"]
    assert len(sorted_files) == len(pictures)
    left = {os.path.basename(path): why for path, why in summary.left}
    assert set(left) == UNREADABLE
    assert "empty" in left["empty.jpg"] and "not an image" in left["notes.txt"]
    assert "truncated" in left["truncated.jpg"] and "not a readable image" in left["text.png"]

    rows = (dst / ".animeface" / "report.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + len(before) and "カリ pic 1.jpg" in "\n".join(rows)
    page = (dst / ".animeface" / "report.html").read_text(encoding="utf-8")
    thumbs = {p.name for p in (dst / ".animeface" / "thumbs").iterdir()}
    assert len(thumbs) == len(pictures) and all(name in page for name in thumbs)


def test_a_second_run_into_the_same_folder_overwrites_and_removes_nothing(messy, tmp_path, empty_rec):
    dst = tmp_path / "sorted"
    sort_folder(empty_rec, messy, dst)
    first = tree(dst)
    (dst / "_noface" / "plain.png").write_bytes(b"the user's own edit")  # a name clash with changed content
    first["_noface/plain.png"] = hashlib.sha256(b"the user's own edit").hexdigest()
    summary = sort_folder(empty_rec, messy, dst)
    after = tree(dst)
    assert {p: after[p] for p in first} == first, "no file in DST was changed or removed"
    assert list(set(after) - set(first)) == ["_noface/plain-2.png"], "the displaced picture got a new name"
    assert summary.copied == 1 and summary.identical == 4


def test_move_loses_no_file_and_undo_puts_every_file_back(messy, tmp_path, gallery_copy, capsys, monkeypatch):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    walked, walk = [], animeface.files.walk
    monkeypatch.setattr(animeface.files, "walk", lambda root, **kw: walked.append(root) or walk(root, **kw))
    before, dst = tree(messy), tmp_path / "sorted"
    assert main(["sort", str(messy), str(dst), "--move", "--gallery", str(gallery_copy), "-q"]) == EXIT_SOME_FAILED
    assert len(walked) == 1, "the source is walked once: a folder of a million files takes minutes to walk"
    remaining, sorted_files = tree(messy), tree(dst)
    assert set(remaining) == {p for p in before if p.rsplit("/", 1)[-1] in UNREADABLE}, "only non-pictures stay"
    assert set(before.values()) == set(remaining.values()) | set(sorted_files.values()), "every file is somewhere"
    assert "sources removed 5" in capsys.readouterr().out

    def every_byte():
        return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    held = every_byte()
    assert main(["sort", "--undo", str(dst), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert every_byte() == held, "a dry run of undo changes nothing"
    lines = said.splitlines()
    assert sum(line.startswith("would put back ") for line in lines) == 5
    assert lines[-1] == "dry run, nothing changed; undo would put back 5 file(s) and remove 4 copy(ies)"
    assert main(["sort", "--undo", str(dst)]) == 0
    assert tree(messy) == before
    assert tree(dst) == {}
    assert main(["sort", "--undo", str(dst)]) == 1
    assert "already undone" in capsys.readouterr().err


def test_undo_puts_back_files_named_with_line_separators_and_says_what_it_cannot(tmp_path, empty_rec, capsys):
    """U+2028, U+2029 and U+0085 in file names lose no journal record, so undo puts each file back;
    a file whose every copy is gone is named, the exit status says so, and the run is not marked undone."""
    src, dst = tmp_path / "src", tmp_path / "sorted"
    for i, name in enumerate(["a\u2028b.png", "c\u2029d.png", "e\x85f.png", "plain.png"]):
        put(src / name, plain_png((10 * i, 20, 30)))
    before = tree(src)
    empty_rec.save()
    assert main(["sort", str(src), str(dst), "--move", "--gallery", str(empty_rec.path),
                 "--backbone", RANDOM_BACKBONE, "-q"]) == 0
    assert tree(src) == {}
    (dst / "_noface" / "plain.png").unlink()  # the only copy of one source
    capsys.readouterr()
    assert main(["sort", "--undo", str(dst), "-q"]) == EXIT_SOME_FAILED
    assert f"left {src / 'plain.png'}: could not be put back" in capsys.readouterr().out
    assert tree(src) == {name: sha for name, sha in before.items() if name != "plain.png"}
    assert main(["sort", "--undo", str(dst), "-q"]) == EXIT_SOME_FAILED, "not marked undone: still says what is missing"


def test_a_picture_with_several_characters_goes_to_each_folder(tmp_path, empty_rec, shared_data, monkeypatch):
    src = tmp_path / "src"
    put(src / "group.jpg", (shared_data / "illustrations" / "set_b" / "test_1.jpg").read_bytes())
    names = cycle(["gura", "calli"])

    def fixed_names(vectors, boxes):  # stands in for a trained gallery, so the test does not hang on it
        return [animeface.Face(b, next(names), 0.9, []) for b in boxes]

    monkeypatch.setattr(empty_rec, "name_faces", fixed_names)
    dst = src / "sorted"  # inside SRC: must be skipped on the next run
    sort_folder(empty_rec, src, dst)
    assert set(tree(dst)) == {"calli/group.jpg", "gura/group.jpg"}
    summary = sort_folder(empty_rec, src, dst)
    assert summary.files == 1 and summary.copied == 0


def test_undo_keeps_a_copy_changed_after_the_sort(messy, tmp_path, empty_rec):
    dst = tmp_path / "sorted"
    sort_folder(empty_rec, messy, dst)
    (dst / "_noface" / "plain.png").write_bytes(b"edited")
    summary = undo(dst)
    assert [os.path.basename(p) for p, _ in summary.kept] == ["plain.png"]
    assert tree(dst) == {"_noface/plain.png": hashlib.sha256(b"edited").hexdigest()}
    with pytest.raises(SortError, match="nothing to undo"):
        undo(tmp_path / "never-sorted")


def test_a_killed_run_resumes_without_redoing_files_and_can_be_undone(tmp_path, shared_data, capsys, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "sorted"
    for name in ("gura", "calli", "kiara", "fauna"):
        for i, crop in enumerate(crops(name, 40, 4)):  # 16 faces: two embedding batches
            put(src / name[:2] / f"{i}.jpg", crop.read_bytes())
    before = tree(src)
    animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE).save()  # an empty gallery: every face unknown
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANIMEFACE_BACKBONE": RANDOM_BACKBONE, "ANIMEFACE_HOME": str(tmp_path / "g")}
    argv = [sys.executable, "-m", "animeface", "sort", str(src), str(dst), "--move", "--faces", "auto", "--jobs", "2", "-q"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = dst / ".animeface"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            lines = [p.read_text() for p in journal.glob("journal-*.jsonl")] if journal.is_dir() else []
            if sum(text.count('"op": "done"') for text in lines) >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert set(before.values()) <= set(tree(src).values()) | set(tree(dst).values()), "nothing lost by the kill"

    monkeypatch.setenv("ANIMEFACE_HOME", env["ANIMEFACE_HOME"])
    assert main(argv[3:] + ["--backbone", RANDOM_BACKBONE]) == 0  # started again, in-process
    assert "done before the interruption" in capsys.readouterr().out
    (path,) = journal.glob("journal-*.jsonl")
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]
    done = [e["src"] for e in entries if e["op"] == "done"]
    assert sorted(done) == sorted(str(src / p) for p in before), "each file finished exactly once"
    assert tree(src) == {} and sorted(tree(dst).values()) == sorted(before.values())

    assert main(["sort", "--undo", str(dst), "-q"]) == 0
    assert tree(src) == before and tree(dst) == {}


def test_undo_of_an_interrupted_run_puts_moved_files_back(tmp_path, empty_rec, messy, monkeypatch):
    before, dst = tree(messy), tmp_path / "sorted"
    real = empty_rec.name_faces
    monkeypatch.setattr(empty_rec, "name_faces", interrupted_after(4, real))
    with pytest.raises(KeyboardInterrupt):
        sort_folder(empty_rec, messy, dst, move=True, jobs=1)
    assert set(before.values()) == set(tree(messy).values()) | set(tree(dst).values())
    assert len(tree(messy)) < len(before), "some files were moved before the interruption"
    undo(dst)
    assert tree(messy) == before and tree(dst) == {}


# -- --group-unknown ---------------------------------------------------------------------
#
# Random weights make meaningless groups, so these tests fix the grouping: cluster.group is
# replaced, by one group of every face (one_group) or by the groups a test needs.


ONE_GROUP = 0.5


@pytest.fixture
def one_group(monkeypatch):
    from animeface import cluster

    monkeypatch.setattr(cluster, "group", lambda vectors, threshold, pictures: np.zeros(len(vectors), int))


@pytest.fixture
def two_characters(tmp_path, shared_data):
    """Six face crops each of two characters."""
    src = tmp_path / "src"
    for name in ("gura", "calli"):
        for i, crop in enumerate(crops(name, 10, 6)):
            put(src / name / f"{i}.jpg", crop.read_bytes())
    return src


def test_group_unknown_files_pictures_into_group_folders_without_overwriting(two_characters, tmp_path, empty_rec,
                                                                            one_group):
    before, dst = tree(two_characters), tmp_path / "sorted"
    put(dst / "_unknown" / "group-01" / "0.jpg", b"the user's own file")
    planned, done = [], []
    options = dict(faces="auto", group_unknown=True, similarity=ONE_GROUP)
    sort_folder(empty_rec, two_characters, dst, dry_run=True, log=planned.append, **options)
    assert set(tree(dst)) == {"_unknown/group-01/0.jpg"}, "a dry run writes nothing"
    summary = sort_folder(empty_rec, two_characters, dst, log=done.append, **options)
    assert planned == done
    assert tree(two_characters) == before
    after = tree(dst)
    assert after["_unknown/group-01/0.jpg"] == hashlib.sha256(b"the user's own file").hexdigest()
    assert {p.rsplit("/", 1)[0] for p in after} == {"_unknown/group-01"}
    assert sorted(after.values()) == sorted([*before.values(), hashlib.sha256(b"the user's own file").hexdigest()])
    assert "_unknown/group-01/: 12" in str(summary)
    assert "_unknown/group-01" in (dst / ".animeface" / "report.html").read_text(encoding="utf-8")


def test_a_picture_goes_to_each_group_its_faces_fall_in(tmp_path, empty_rec, shared_data, monkeypatch):
    from animeface import cluster

    src = tmp_path / "src"
    put(src / "group.jpg", (shared_data / "illustrations" / "set_b" / "test_1.jpg").read_bytes())
    monkeypatch.setattr(cluster, "group", lambda vectors, threshold, pictures: np.arange(len(vectors)) % 2)
    summary = sort_folder(empty_rec, src, tmp_path / "sorted", group_unknown=True, similarity=0.5)
    assert set(tree(tmp_path / "sorted")) == {"_unknown/group-01/group.jpg", "_unknown/group-02/group.jpg"}
    assert summary.folders == {"_unknown/group-01": 1, "_unknown/group-02": 1}


def test_group_folders_are_numbered_from_the_largest_with_enough_digits(monkeypatch):
    from animeface import cluster
    from animeface.sort import group_folders

    monkeypatch.setattr(cluster, "group", lambda vectors, threshold, pictures: np.array([1, 0, -1]))
    assert group_folders(np.zeros((3, 4)), 0.5, np.arange(3)) == ["_unknown/group-02", "_unknown/group-01", None]
    monkeypatch.setattr(cluster, "group", lambda vectors, threshold, pictures: np.arange(100))
    assert group_folders(np.zeros((100, 4)), 0.5, np.arange(100))[::99] == ["_unknown/group-001", "_unknown/group-100"]


def test_group_unknown_without_a_gallery_and_undo_restores_the_source(two_characters, tmp_path, capsys, one_group):
    before, dst = tree(two_characters), tmp_path / "sorted"
    argv = ["sort", str(two_characters), str(dst), "--group-unknown", "--similarity", str(ONE_GROUP), "--move",
            "--faces", "auto", "--backbone", RANDOM_BACKBONE, "-q"]
    assert main(argv) == 0  # no gallery at ANIMEFACE_HOME: every face is unknown and grouped
    assert tree(two_characters) == {}
    assert {p.rsplit("/", 1)[0] for p in tree(dst)} == {"_unknown/group-01"}
    assert "_unknown/group-01/: 12" in capsys.readouterr().out
    assert main(["sort", "--undo", str(dst), "-q"]) == 0
    assert tree(two_characters) == before
    assert [p.name for p in dst.iterdir()] == [".animeface"], "the group folders are gone too"


def test_sort_with_no_gallery_yet_groups_the_faces_and_says_how_to_name_a_group(two_characters, tmp_path, capsys,
                                                                                 one_group, monkeypatch):
    """The README's first line after installing: no gallery exists, and sort is still useful."""
    dst = tmp_path / "sorted"
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)
    # random weights carry no calibrated threshold, so the test gives one
    assert main(["sort", str(two_characters), str(dst), "--faces", "auto", "--similarity", str(ONE_GROUP), "-q"]) == 0
    out, err = capsys.readouterr()
    assert "grouping the faces by character" in err
    assert {p.rsplit("/", 1)[0] for p in tree(dst)} == {"_unknown/group-01"}
    hint = next(line for line in out.splitlines() if line.startswith("name a group:"))
    assert f"animeface enroll NAME {dst / '_unknown' / 'group-01'}/" in hint and "--undo" in hint
    assert not (tmp_path / "home-gallery").exists(), "sorting creates no gallery"
    animeface.Recognizer(tmp_path / "home-gallery", backbone=RANDOM_BACKBONE).save()  # a gallery now exists
    assert main(["sort", str(two_characters), str(dst), "--similarity", "0.5"]) == 2, "--similarity needs grouping"


def test_a_grouping_sort_that_forms_no_group_says_why(two_characters, tmp_path, capsys, monkeypatch):
    from animeface import cluster

    monkeypatch.setattr(cluster, "group", lambda vectors, threshold, pictures: np.full(len(vectors), -1))
    dst = tmp_path / "sorted"
    argv = ["sort", str(two_characters), str(dst), "--group-unknown", "--similarity", str(ONE_GROUP), "--faces", "auto",
            "--backbone", RANDOM_BACKBONE, "-q"]
    assert main(argv) == 0
    assert {p.rsplit("/", 1)[0] for p in tree(dst)} == {"_unknown"}
    out = capsys.readouterr().out
    assert f"no group formed: a group needs {cluster.MIN_GROUP} or more unknown faces alike" in out
    assert "name a group" not in out
    # a dry run that forms a group says neither: it made no folder to name
    monkeypatch.setattr(cluster, "group", lambda vectors, threshold, pictures: np.arange(len(vectors)) % 2 - 1)
    argv[2] = str(tmp_path / "other")
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "_unknown/group-01/: 6" in out and "no group formed" not in out and "name a group" not in out


def test_an_interrupted_group_unknown_run_resumes_into_the_same_groups(two_characters, tmp_path, empty_rec,
                                                                       monkeypatch, one_group):
    from animeface import cluster, sort

    before, dst = tree(two_characters), tmp_path / "sorted"
    options = dict(faces="auto", move=True, group_unknown=True, similarity=ONE_GROUP)
    real_name_faces, real_copy = empty_rec.name_faces, sort.copy_verified
    # interrupted while naming: no unknown picture is placed yet
    monkeypatch.setattr(empty_rec, "name_faces", interrupted_after(6, real_name_faces))
    with pytest.raises(KeyboardInterrupt):
        sort_folder(empty_rec, two_characters, dst, jobs=1, **options)
    monkeypatch.setattr(empty_rec, "name_faces", real_name_faces)
    assert not (dst / "_unknown").exists()

    # interrupted while filing the groups: some pictures are placed
    monkeypatch.setattr(sort, "copy_verified", interrupted_after(4, real_copy))
    with pytest.raises(KeyboardInterrupt):
        sort_folder(empty_rec, two_characters, dst, **options)
    assert len(tree(dst / "_unknown")) == 4 and set(before.values()) == set(tree(two_characters).values()) | set(
        tree(dst).values()), "nothing lost by either interruption"

    monkeypatch.setattr(sort, "copy_verified", real_copy)
    monkeypatch.setattr(cluster, "group", lambda *args, **kwargs: pytest.fail("a resumed run groups again"))
    summary = sort_folder(empty_rec, two_characters, dst, **options)
    assert summary.resumed == 4 and summary.folders["_unknown/group-01"] == 12
    assert tree(two_characters) == {} and {p.rsplit("/", 1)[0] for p in tree(dst)} == {"_unknown/group-01"}
    undo(dst)
    assert tree(two_characters) == before and tree(dst) == {}


# -- issue 23: summaries after resume and re-run ------------------------------------------------


def test_a_resumed_run_counts_as_a_fresh_run_does(tmp_path, empty_rec, monkeypatch):
    """A duplicate placed after the interruption finds its twin's copy, made before it: 'already
    there', as in an uninterrupted run, not 'copied'."""
    src = tmp_path / "src"
    gura = crops("gura", 30, 1)[0].read_bytes()
    put(src / "a.jpg", gura)
    put(src / "b.jpg", gura)
    for i, crop in enumerate(crops("calli", 30, 2)):
        put(src / f"c{i}.jpg", crop.read_bytes())
    fresh = sort_folder(empty_rec, src, tmp_path / "fresh", faces="auto", jobs=1)
    real = empty_rec.name_faces
    monkeypatch.setattr(empty_rec, "name_faces", interrupted_after(1, real))
    with pytest.raises(KeyboardInterrupt):
        sort_folder(empty_rec, src, tmp_path / "resumed", faces="auto", jobs=1)
    monkeypatch.setattr(empty_rec, "name_faces", real)
    resumed = sort_folder(empty_rec, src, tmp_path / "resumed", faces="auto", jobs=1)
    assert resumed.resumed == 1 and fresh.identical == 1
    assert (resumed.copied, resumed.identical, resumed.folders) == (fresh.copied, fresh.identical, fresh.folders)

    def counts(dst):
        import re

        return re.search(r"copied \d+, already there \d+", (dst / ".animeface" / "report.html").read_text()).group()

    assert counts(tmp_path / "resumed") == counts(tmp_path / "fresh")


def test_a_re_run_places_what_it_placed_before_without_decoding_it_again(messy, tmp_path, empty_rec, monkeypatch):
    dst = tmp_path / "sorted"
    first = sort_folder(empty_rec, messy, dst)
    (dst / ".animeface" / "report.html").write_text("stale")
    analysed = []
    real = empty_rec.face_crops
    monkeypatch.setattr(empty_rec, "face_crops", lambda rgb, faces: analysed.append(1) or real(rgb, faces))
    again = sort_folder(empty_rec, messy, dst)
    assert analysed == [], "nothing decoded, detected or embedded again"
    placed = first.copied + first.identical
    assert (again.copied, again.identical, again.folders) == (0, placed, first.folders)
    assert len(again.left) == len(first.left)
    page = (dst / ".animeface" / "report.html").read_text(encoding="utf-8")
    assert f"copied 0, already there {placed}" in page, "the report is rewritten"
    assert len(list((dst / ".animeface").glob("journal-*.jsonl"))) == 1, "a run that changed nothing is not journalled"

    put(messy / "new" / "kiara.jpg", crops("kiara", 30, 1)[0].read_bytes())
    (copy,) = [p for p in dst.rglob("face.jpg") if ".animeface" not in p.parts]
    copy.unlink()  # a copy the user deleted is made again
    again = sort_folder(empty_rec, messy, dst)
    assert len(analysed) == 1 + 2, "the new picture, and the two sources of the deleted copy"
    assert again.copied == 2 and copy.is_file()

    enrolled = animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    enrolled.enroll("gura", crops("gura", 0, 2), faces="whole")
    monkeypatch.setattr(enrolled, "face_crops", lambda rgb, faces: analysed.append(1) or real(rgb, faces))
    analysed.clear()
    sort_folder(enrolled, messy, dst)
    assert len(analysed) == placed + 1, "another gallery: every picture is looked at again"


def test_undo_removes_the_report_of_the_run_it_undoes(messy, tmp_path, empty_rec):
    dst = tmp_path / "sorted"
    sort_folder(empty_rec, messy, dst)
    state = dst / ".animeface"
    assert (state / "report.html").is_file() and (state / "report.csv").is_file() and (state / "thumbs").is_dir()
    undo(dst)
    assert not (state / "report.html").exists() and not (state / "report.csv").exists()
    assert not (state / "thumbs").exists() and tree(dst) == {}
