"""animeface index: on a real two-node Ray cluster (both nodes on the loopback address, one CPU each),
over real pictures; a node killed mid-run, reruns, new pictures, and bad input.

The test starts the cluster itself (`ray start --head`, then `ray start --address`, each in a new
process group) and stops exactly what it started, by process id: never `ray stop`, which would
stop every Ray on the machine.
"""

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from animeface.index import SCHEMA_VERSION
from conftest import CHARACTERS, HOLOEN, RANDOM_BACKBONE, ROOT, SHARED

pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

RAY = Path(sys.executable).with_name("ray")
#: A lost node is noticed in seconds rather than Ray's default half minute.
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
                      "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below pid (Ray's workers start sessions of their own, so the group misses them)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                continue
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


class Node:
    """One `ray start --block` of ours, with everything it starts."""

    def __init__(self, args: list[str], log: Path, env: dict):
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen([str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1",
                                             "--num-cpus", "1", "--object-store-memory", str(150 << 20),
                                             "--disable-usage-stats", *args],
                                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_started(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL the node's processes, by id: as if its machine had died."""
        pids = [self.process.pid] + _descendants(self.process.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node on 127.0.0.1, one CPU each; yields (address, the environment a
    driver needs to join it, the worker node)."""
    temp = Path(tempfile.mkdtemp(prefix="rt"))  # short: Ray's socket paths must fit in 107 bytes
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # this cluster's own
    env = {**os.environ, **FAST_HEALTH_CHECKS, **token, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{_free_port()}"
    head = Node(["--head", "--port", address.rsplit(":", 1)[1], "--include-dashboard", "false",
                 "--temp-dir", str(temp)], temp / "head.log", env)
    nodes = [head]
    try:
        head.wait_started()
        worker = Node(["--address", address], temp / "worker.log", env)
        nodes.append(worker)
        worker.wait_started()
        yield address, token, worker
    finally:
        for node in nodes:
            if node.process.poll() is None or _descendants(node.process.pid):
                node.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _index(*args, wait: bool = True, env: dict | None = None):
    command = [sys.executable, "-m", "animeface", "index", *map(str, args), "--backbone", RANDOM_BACKBONE, "-q"]
    env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def _pictures(folder: Path) -> list[Path]:
    """About 60 real files: illustrations (two of them photos, with no anime face), face crops of
    enrolled and other characters (four of them enrolled), small crops, and two that are no pictures."""
    illustrations = sorted((SHARED / "illustrations" / "set_a").iterdir())
    photos = sorted((SHARED / "illustrations" / "set_c" / "zymk9+yolov5_anime__real_photo_negatives").iterdir())
    crops = [p for c in sorted(HOLOEN.iterdir())[:11] for p in sorted(c.iterdir())[100:104]]
    enrolled = [sorted((HOLOEN / c).iterdir())[0] for c in CHARACTERS]  # the gallery names these
    small = sorted((SHARED / "faces" / "unlabeled64").iterdir())[:3]
    made = []
    for i, source in enumerate(illustrations + photos + crops + enrolled + small):
        target = folder / f"part{i % 3}" / f"{i:03d}_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        made.append(target)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return made + [folder / "broken.jpg", folder / "empty.png"]


def _check_exactly_once(table, pictures: list[Path]) -> None:
    """Every picture is in the table, each with one row per face (one row when it has none), once."""
    rows = table.select(["path", "face", "faces"]).to_pylist()
    per_picture = Counter(r["path"] for r in rows)
    assert set(per_picture) == {str(p) for p in pictures}
    for r in rows:
        assert per_picture[r["path"]] == max(r["faces"], 1), r["path"]
    assert len({(r["path"], r["face"]) for r in rows}) == len(rows)


def _parts(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in out.iterdir()}


def test_index_on_a_cluster_agrees_with_identify_survives_a_lost_node_and_carries_on(
        cluster, built_gallery, tmp_path):
    import animeface
    from animeface.io import load_image

    address, token, worker = cluster
    # the cascade, the faster detector (FaceBoxes is run by the test below); a refusal low enough that
    # random weights name the enrolled crops
    NAMING = ("--gallery", built_gallery, "--detector", "cascade", "--refuse-strangers", "0.5")
    src, out = tmp_path / "pictures", tmp_path / "index"
    pictures = _pictures(src)
    assert len(pictures) >= 60

    # a worker node dies mid-run: once the first parts are written, its processes are killed
    run = _index(src, "--out", out, *NAMING, "--address", address, "--part-size", "4", wait=False,
                 env=token)
    deadline = time.monotonic() + 300
    while not (out.is_dir() and any(n.startswith("part-") for n in os.listdir(out))):
        assert run.poll() is None, run.communicate()
        if time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"no part written in 5 minutes: {run.communicate()}")
        time.sleep(0.1)
    assert run.poll() is None, "the run ended before the node could be killed"
    worker.kill()
    try:
        run.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail(f"the run did not end in 10 minutes after its node was lost: {run.communicate()}")
    if run.returncode not in (0, 3):  # the run may fail with the node; the rerun then carries on
        finished = _index(src, "--out", out, *NAMING, "--address", address, env=token)
        assert finished.returncode in (0, 3), finished.stderr
    table = animeface.read_index(out)
    _check_exactly_once(table, pictures)
    assert all(n.startswith("part-") and n.endswith(".parquet") for n in os.listdir(out)), os.listdir(out)

    rec = animeface.Recognizer(built_gallery, backbone=RANDOM_BACKBONE, detector="cascade", stranger_refusal=0.5,
                               progress=False)
    description = json.loads(table.schema.metadata[b"animeface"])
    assert description["schema_version"] == SCHEMA_VERSION
    assert description["embedder"] == rec.run_description()
    assert len(description["gallery_sha256"]) == 64

    # every row agrees with `animeface identify --json` on the same pictures
    identify = subprocess.run([sys.executable, "-m", "animeface", "identify", str(src), "--json", *map(str, NAMING),
                               "--backbone", RANDOM_BACKBONE, "-q"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    expected = {d["path"]: d for d in map(json.loads, identify.stdout.splitlines())}
    assert set(expected) == {str(p) for p in pictures}
    rows = {(r["path"], r["face"]): r for r in table.to_pylist()}
    named = 0
    for path, picture in expected.items():
        if picture["error"]:
            (row,) = [r for (p, _), r in rows.items() if p == path]
            assert row["error"] and row["box"] is None and row["vector"] is None
            continue
        if not picture["faces"]:
            assert rows[path, None]["box"] is None and rows[path, None]["error"] is None
            assert rows[path, None]["width"] > 0
        for i, face in enumerate(picture["faces"]):
            row = rows[path, i]
            assert row["box"] == face["box"] and row["whole_picture"] == face["whole_picture"]
            assert row["box_score"] == pytest.approx(face["box_score"], abs=1e-5)
            assert row["box_angle"] == face["box_angle"]
            assert row["label"] == face["label"]
            assert row["score"] == pytest.approx(face["score"], abs=1e-3)
            assert [c["name"] for c in row["candidates"]] == [name for name, _ in face["candidates"]]
            named += row["label"] is not None
    assert named, "no face was named: the comparison of labels would show nothing"

    # the vectors are those the Recognizer's own stages give, within float tolerance
    for path in [p for p in pictures if p.suffix != ".png" or p.stat().st_size][::6]:
        boxes, crops = rec.face_crops(load_image(path), "auto")
        for i, vector in enumerate(rec.vectors_for(crops, keep=True) if crops else []):
            np.testing.assert_allclose(rows[str(path), i]["vector"], vector, atol=2e-3)

    # cluster --index groups the unknown faces from the stored vectors; the named ones are set aside
    grouped = subprocess.run([sys.executable, "-m", "animeface", "cluster", "--index", str(out), "--similarity", "0.5",
                              "--json", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert grouped.returncode == 3, grouped.stderr  # the two unreadable files, named on stderr
    assert str(src / "broken.jpg") in grouped.stderr
    groups = json.loads(grouped.stdout.splitlines()[-1])
    faces = [r for r in rows.values() if r["vector"] is not None]
    assert sorted((f["source"], f["box"], f["label"]) for f in groups["named"]) == \
        sorted((r["path"], r["box"], r["label"]) for r in faces if r["label"])
    assert sum(len(c["faces"]) for c in groups["clusters"]) + len(groups["ungrouped"]) == \
        sum(r["label"] is None for r in faces)

    # sort --index files each picture by the faces the index named, detecting and embedding nothing again
    dst = tmp_path / "sorted"
    sorted_run = subprocess.run([sys.executable, "-m", "animeface", "sort", str(src), str(dst), "--index", str(out),
                                 "-q"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert sorted_run.returncode == 3, sorted_run.stderr  # the two unreadable files are left in place
    with open(dst / ".animeface" / "report.csv", encoding="utf-8") as fh:
        placed = {r["source"]: sorted(Path(d).parent.name for d in r["destinations"].split(";") if d)
                  for r in csv.DictReader(fh)}
    assert set(placed) == {str(p) for p in pictures}
    for path, folders in placed.items():
        mine = [r for (p, _), r in rows.items() if p == path]
        labels = sorted({r["label"] for r in mine if r["label"]})
        expected = [] if mine[0]["error"] else labels or ["_unknown" if mine[0]["box"] is not None else "_noface"]
        assert folders == expected, path

    # a rerun adds nothing, and writes nothing
    before = _parts(out)
    again = _index(src, "--out", out, *NAMING, "--address", address, env=token)
    assert again.returncode == 0, again.stderr
    assert "indexed 0 picture(s)" in again.stdout
    assert _parts(out) == before

    # ten new pictures add exactly those ten pictures' rows; the parts there are left as they were
    new = [p for p in sorted((HOLOEN / "gura").iterdir())[110:120]]
    for p in new:
        shutil.copyfile(p, src / "part0" / f"new_{p.name}")
    more = _index(src, "--out", out, *NAMING, "--address", address, env=token)
    assert more.returncode == 0, more.stderr
    assert "indexed 10 picture(s)" in more.stdout
    after = animeface.read_index(out)
    _check_exactly_once(after, pictures + [src / "part0" / f"new_{p.name}" for p in new])
    assert {n: m for n, m in _parts(out).items() if n in before} == before
    assert after.num_rows - table.num_rows == sum(max(r["faces"], 1) for r in after.to_pylist()
                                                  if "new_" in r["path"]) >= 10


def test_bad_input_on_ray_started_here(tmp_path, monkeypatch):
    """With no address, Ray starts on this machine. A FIFO, an empty, a truncated and a non-picture
    file each get a row saying why, and a line naming them; the pictures beside them are indexed."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    src = tmp_path / "pictures"
    src.mkdir()
    good = sorted((HOLOEN / "kiara").iterdir())[:2]
    for p in good:
        shutil.copyfile(p, src / p.name)
    os.mkfifo(src / "pipe.jpg")
    (src / "empty.jpg").write_bytes(b"")
    (src / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    (src / "notes.txt").write_text("not a picture")
    out = tmp_path / "index"
    result = _index(src, "--out", out)
    assert result.returncode == 3, result.stderr
    import animeface

    table = animeface.read_index(out)
    errors = {Path(r["path"]).name: r["error"] for r in table.to_pylist() if r["error"]}
    assert set(errors) == {"pipe.jpg", "empty.jpg", "truncated.jpg", "notes.txt"}
    assert "FIFO" in errors["pipe.jpg"] and "empty" in errors["empty.jpg"]
    for name in errors:
        assert str(src / name) in result.stderr
    faces = [r for r in table.to_pylist() if not r["error"]]
    assert {Path(r["path"]).name for r in faces} == {p.name for p in good}
    assert all(r["vector"] is not None and r["label"] is None for r in faces)  # no gallery: vectors only
    assert json.loads(table.schema.metadata[b"animeface"])["gallery_sha256"] is None


def test_an_out_folder_holding_other_files_is_refused_untouched(tmp_path):
    src = tmp_path / "pictures"
    src.mkdir()
    shutil.copyfile(next((HOLOEN / "gura").iterdir()), src / "a.jpg")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    result = _index(src, "--out", out)
    assert result.returncode == 1
    assert "notes.txt" in result.stderr and "not part of an index" in result.stderr
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = _index(src, "--out", afile)
    assert result.returncode == 1 and "not a folder" in result.stderr
    assert afile.read_text() == "x"
