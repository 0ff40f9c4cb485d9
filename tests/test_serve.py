"""`animeface serve` (issue 13): the JSON API through the framework's test client, and the guard
that refuses a request before reading its body."""

import asyncio
import base64
import errno
import http.client
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

import pytest
from fastapi.testclient import TestClient

from animeface import Recognizer
from animeface.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from animeface import serve
from animeface.serve import UPLOAD_LIMIT, create_app

from conftest import CASCADE, RANDOM_BACKBONE, ROOT, SHARED, crops

TOKEN = "test-token"
LOGIN = "test-login-key"
ORIGIN = "http://127.0.0.1:8765"
#: Two faces the cascade finds.
SCENE = SHARED / "illustrations" / "set_a" / "sample1.jpg"
SCENE_W, SCENE_H = 480, 539


def app_over(gallery: Path, **kwargs):
    return create_app(Recognizer(gallery, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False), TOKEN, LOGIN,
                      **kwargs)


@pytest.fixture
def client(gallery_copy):
    """The page's user: signed in through the one-time link that serve prints."""
    with TestClient(app_over(gallery_copy), base_url=ORIGIN) as test_client:
        assert test_client.get(f"/login?key={LOGIN}").status_code == 200
        yield test_client


def upload(path: Path, name: str | None = None) -> dict:
    return {"picture": (name or path.name, path.read_bytes())}


def changing(client, path, headers=(), **kwargs):
    """A gallery-changing POST as the page sends it: its own Origin and the token."""
    return client.post(path, headers={"origin": ORIGIN, "x-animeface-token": TOKEN, **dict(headers)}, **kwargs)


def gallery_files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_page_holds_the_token_and_ships_its_own_script_and_style(client):
    page = client.get("/")
    assert page.status_code == 200 and f'content="{TOKEN}"' in page.text
    assert "http" not in page.text.replace(ORIGIN, "")  # nothing fetched from elsewhere: works offline
    assert client.get("/app.js").status_code == 200 and client.get("/style.css").status_code == 200
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/api/identify", "/api/explain", "/api/enroll", "/api/unenroll", "/api/characters", "/api/forget"} <= set(paths)


def test_identify_answers_as_the_command_line_does(client, gallery_copy, capsys):
    code = main(["identify", str(SCENE), str(crops("gura", 20, 1)[0]), "--json", "--gallery", str(gallery_copy),
                 "--backbone", RANDOM_BACKBONE, "-q"])
    assert code == EXIT_OK
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for path, line in zip([SCENE, crops("gura", 20, 1)[0]], expected):
        answer = client.post("/api/identify", files=upload(path))
        assert answer.status_code == 200
        got = answer.json()
        assert got["path"] == path.name and got["error"] is None
        assert got["faces"] == line["faces"]
    assert len(expected[0]["faces"]) == 2


def test_explain_maps_what_matched_each_faces_best_candidate(client, tmp_path):
    faces = client.post("/api/identify", files=upload(SCENE)).json()["faces"]
    answer = client.post("/api/explain", files=upload(SCENE))  # changes nothing: no token needed, as identify
    assert answer.status_code == 200
    items = {item["face"]: item for item in answer.json()["explanations"]}
    assert set(items) == {i for i, face in enumerate(faces) if face["candidates"]} and items
    for i, item in items.items():
        assert item["box"] == faces[i]["box"] and item["candidate"] == faces[i]["candidates"][0][0]
        heat = np.array(item["heat"])
        assert heat.ndim == 2 and heat.shape[0] == heat.shape[1] > 1
        # the map accounts for the similarity (rounded to 4 decimals a cell)
        assert abs(heat.sum() + item["colour"] + item["offset"] - item["similarity"]) < 0.02
        header, data = item["overlay"].split(",", 1)
        overlay = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert header == "data:image/jpeg;base64" and overlay.shape == (serve.OVERLAY_SIDE, serve.OVERLAY_SIDE, 3)
    with TestClient(app_over(tmp_path / "empty"), base_url=ORIGIN) as empty:
        assert empty.get(f"/login?key={LOGIN}").status_code == 200
        answer = empty.post("/api/explain", files=upload(SCENE))
        assert answer.status_code == 409 and "the gallery is empty" in answer.json()["detail"]


def test_a_bad_upload_is_a_400_naming_the_problem(client, tmp_path):
    answer = client.post("/api/identify", files={"picture": ("notes.png", b"just some text\n")})
    assert answer.status_code == 400 and "notes.png: not a readable image" in answer.json()["detail"]
    answer = client.post("/api/identify", files=upload(SCENE), data={"faces": "all"})
    assert answer.status_code == 400 and "faces must be one of" in answer.json()["detail"]


def test_teach_a_face_then_it_is_named_then_undo(client, gallery_copy):
    first = client.post("/api/identify", files=upload(SCENE)).json()["faces"][0]
    taught = changing(client, "/api/enroll", files=upload(SCENE), data={"name": "Newcomer", "box": json.dumps(first["box"])})
    assert taught.status_code == 200, taught.text
    entry = taught.json()["entry"]
    assert entry["box"] == first["box"] and taught.json()["characters"]["Newcomer"] == 1
    assert "angle" not in entry, "an upright face's entry is as before"
    assert Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, progress=False).characters["Newcomer"] == 1  # saved
    again = client.post("/api/identify", files=upload(SCENE)).json()["faces"]
    # with random weights one taught face need not clear the calibrated thresholds: it must be the best match
    assert [f["candidates"][0][0] for f in again if f["box"] == first["box"]] == ["Newcomer"]
    twice = changing(client, "/api/enroll", files=upload(SCENE), data={"name": "Newcomer", "box": json.dumps(first["box"])})
    assert twice.status_code == 400 and "already enrolled" in twice.json()["detail"]
    names = [c["name"] for c in client.get("/api/characters").json()["characters"]]
    assert "Newcomer" in names
    undone = changing(client, "/api/unenroll", json={k: entry[k] for k in ("label", "sha256", "box")})
    assert undone.status_code == 200 and "Newcomer" not in undone.json()["characters"]
    assert "Newcomer" not in Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, progress=False).characters
    gone = changing(client, "/api/unenroll", json={k: entry[k] for k in ("label", "sha256", "box")})
    assert gone.status_code == 404


@pytest.mark.parametrize("form, problem", [
    ({"name": "x", "box": "[1, 2, 3]"}, "box must be [x, y, w, h]"),
    ({"name": "x", "box": "[5000, 0, 10, 10]"}, f"is not inside the {SCENE_W}x{SCENE_H} picture"),
    # break 8: a box past the picture cost a 500 (10**9) or a gigabyte (10000); each is refused, as one past its edge
    ({"name": "x", "box": "[0, 0, 1, 1000000000]"}, f"is not inside the {SCENE_W}x{SCENE_H} picture"),
    ({"name": "x", "box": "[0, 0, 1, 10000]"}, f"is not inside the {SCENE_W}x{SCENE_H} picture"),
    ({"name": "x", "box": f"[0, 0, 1, {SCENE_H + 1}]"}, f"is not inside the {SCENE_W}x{SCENE_H} picture"),
    ({"name": "x", "box": "[-1, 0, 50, 50]"}, f"is not inside the {SCENE_W}x{SCENE_H} picture"),
    ({"name": "../etc", "box": ""}, "must not contain slashes"),
    ({"name": "x", "box": "[0, 0, 50, 50]", "angle": "nan"}, "angle must be degrees from -180 to 180"),
    ({"name": "x", "box": "[0, 0, 50, 50]", "angle": "1e400"}, "angle must be degrees from -180 to 180"),
    ({"name": "x", "angle": "90"}, "an angle turns a box"),
])
def test_enroll_refuses_a_bad_box_or_name(client, gallery_copy, form, problem):
    before = gallery_files(gallery_copy)
    answer = changing(client, "/api/enroll", files=upload(SCENE), data=form)
    assert answer.status_code == 400 and problem in answer.json()["detail"]
    assert gallery_files(gallery_copy) == before


def test_characters_show_counts_and_thumbnails_and_forget_removes_one(client, gallery_copy):
    listed = client.get("/api/characters").json()["characters"]
    assert [(c["name"], c["count"]) for c in listed] == [("gura", 6), ("calli", 6), ("kiara", 6), ("fauna", 6)]
    assert all(len(c["thumbnails"]) == 4 and c["thumbnails"][0].startswith("data:image/jpeg;base64,") for c in listed)
    answer = changing(client, "/api/forget", json={"name": "calli"})
    assert answer.status_code == 200 and answer.json() == {"forgot": "calli", "faces": 6}
    assert "calli" not in Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, progress=False).characters
    assert changing(client, "/api/forget", json={"name": "calli"}).status_code == 404


@pytest.mark.parametrize("headers, status", [
    ({}, 403),                                                              # no token
    ({"x-animeface-token": "guess"}, 403),                                  # a wrong one
    ({"x-animeface-token": TOKEN, "origin": "http://evil.example"}, 403),   # a page elsewhere
    ({"x-animeface-token": TOKEN, "origin": "null"}, 403),
    ({"x-animeface-token": TOKEN, "host": "evil.example:8765", "origin": "http://evil.example:8765"}, 400),
])
def test_gallery_changes_without_the_token_or_from_elsewhere_are_refused(client, gallery_copy, headers, status):
    before = gallery_files(gallery_copy)
    assert client.post("/api/forget", json={"name": "gura"}, headers=headers).status_code == status
    assert client.post("/api/enroll", files=upload(SCENE), data={"name": "x"}, headers=headers).status_code == status
    assert gallery_files(gallery_copy) == before
    assert client.get("/api/characters").json()["characters"][0]["name"] == "gura"


def test_identify_needs_no_token_but_refuses_other_origins(client):
    assert client.post("/api/identify", files=upload(SCENE), headers={"origin": "http://evil.example"}).status_code == 403


def test_only_whoever_opens_the_printed_link_may_use_the_page_or_the_api(gallery_copy):
    """Break 1: another local user reached the page, read the token in it and changed the gallery. Now the
    page, its files and every /api request (GET too) need the HttpOnly, SameSite=Strict cookie that the
    one-time link printed at start-up sets (scripts may send the printed token instead); the link works
    once; and no other page may frame this one."""
    app = app_over(gallery_copy)
    before = gallery_files(gallery_copy)
    with TestClient(app, base_url=ORIGIN) as stranger:
        page = stranger.get("/")
        assert page.status_code == 403 and TOKEN not in page.text
        assert page.headers["x-frame-options"] == "DENY"
        for path in ("/app.js", "/api/characters", "/api/openapi.json", f"/login?key={LOGIN[:-1]}"):
            assert stranger.get(path).status_code == 403, path
        assert stranger.post("/api/identify", files=upload(SCENE)).status_code == 403
        assert stranger.post("/api/forget", json={"name": "gura"}, headers={"origin": ORIGIN}).status_code == 403
    with TestClient(app, base_url=ORIGIN) as owner:
        signed = owner.get(f"/login?key={LOGIN}", follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and LOGIN not in cookie
        page = owner.get("/")
        assert page.status_code == 200 and f'content="{TOKEN}"' in page.text
        for answer in (signed, page, owner.get("/api/characters")):
            assert answer.status_code in (200, 303)
            assert answer.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    with TestClient(app, base_url=ORIGIN) as later:  # the link, once used, opens nothing
        assert later.get(f"/login?key={LOGIN}").status_code == 403 and later.get("/").status_code == 403
        script = later.get("/api/characters", headers={"x-animeface-token": TOKEN})  # a script given the token
        assert script.status_code == 200 and script.json()["characters"][0]["name"] == "gura"
    assert gallery_files(gallery_copy) == before


def test_an_upload_over_the_limit_is_a_413_told_by_length_or_counted(client, gallery_copy):
    before = gallery_files(gallery_copy)
    big = b"\0" * (UPLOAD_LIMIT + 1)
    answer = client.post("/api/identify", files={"picture": ("big.png", big)})
    assert answer.status_code == 413 and "upload limit" in answer.json()["detail"]
    chunks = (b"\0" * (1 << 20) for _ in range((UPLOAD_LIMIT >> 20) + 2))  # chunked: no Content-Length
    answer = changing(client, "/api/enroll", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 413
    assert gallery_files(gallery_copy) == before


class EndlessBody:
    """An ASGI receive() that would stream a body forever, counting the bytes it was asked for."""

    def __init__(self):
        self.read = 0

    async def __call__(self):
        self.read += 1 << 20
        return {"type": "http.request", "body": b"\0" * (1 << 20), "more_body": True}


def call_guard(app, headers: dict, method: str = "POST", path: str = "/api/enroll"):
    """Run one request through the ASGI app; returns (status, bytes of body read)."""
    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "scheme": "http",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()], "server": ("127.0.0.1", 8765),
             "client": ("127.0.0.1", 5000), "http_version": "1.1", "root_path": ""}
    body, sent = EndlessBody(), []

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, body, send))
    return sent[0]["status"], body.read


def test_the_guard_answers_before_reading_the_body(gallery_copy):
    app = app_over(gallery_copy)
    own = {"host": "127.0.0.1:8765"}
    assert call_guard(app, own) == (403, 0)
    assert call_guard(app, {**own, "x-animeface-token": TOKEN, "origin": "http://evil.example"}) == (403, 0)
    assert call_guard(app, {**own, "x-animeface-token": TOKEN, "content-length": str(50 << 20)}) == (413, 0)
    status, read = call_guard(app, {**own, "x-animeface-token": TOKEN})  # chunked: stops at the limit
    assert status == 413 and read <= UPLOAD_LIMIT + (1 << 20)


def test_concurrent_identify_and_enroll_leave_the_gallery_whole(client, gallery_copy):
    pictures = crops("kiara", 10, 4) + [SCENE]
    answers, errors = [], []

    def identify_many():
        try:
            answers.extend(client.post("/api/identify", files=upload(p)).status_code for p in pictures)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=identify_many) for _ in range(4)]
    for t in threads:
        t.start()
    for picture in crops("gura", 30, 3):
        assert changing(client, "/api/enroll", files=upload(picture), data={"name": "gura"}).status_code == 200
    for t in threads:
        t.join()
    assert not errors and answers == [200] * 20
    assert Recognizer.open(gallery_copy, backbone=RANDOM_BACKBONE, progress=False).characters["gura"] == 9


def test_pictures_being_decoded_share_one_pixel_budget(gallery_copy, monkeypatch):
    """Break 7: every identify decoded its picture at once, about 0.9 GB each for a tiny PNG of 8900x8900.
    Now, as in sort, a picture holds its pixels from a budget of ANIMEFACE_MAX_PIXELS while it is decoded
    and searched for faces: a second large picture waits until the first is done. (The wait below only
    gives the second request time to arrive; nothing is timed.)"""
    monkeypatch.setenv("ANIMEFACE_MAX_PIXELS", str(SCENE_W * SCENE_H * 3 // 2))  # room for one scene, not two
    entered, first_inside, second_inside, release = [], threading.Event(), threading.Event(), threading.Event()
    original = Recognizer.face_crops

    def watched(self, rgb, faces):
        entered.append(rgb.shape)
        (first_inside if len(entered) == 1 else second_inside).set()
        if len(entered) == 1:
            release.wait(60)
        return original(self, rgb, faces)

    monkeypatch.setattr(Recognizer, "face_crops", watched)
    answers = []
    with TestClient(app_over(gallery_copy), base_url=ORIGIN, headers={"x-animeface-token": TOKEN}) as client:
        def identify():
            answers.append(client.post("/api/identify", files=upload(SCENE)).status_code)

        threads = [threading.Thread(target=identify) for _ in range(2)]
        threads[0].start()
        assert first_inside.wait(60)
        threads[1].start()
        waited = not second_inside.wait(5)
        release.set()
        for t in threads:
            t.join()
    assert waited, "a second picture was decoded while the first one held the whole pixel budget"
    assert answers == [200, 200] and len(entered) == 2


def test_the_gallery_page_shows_every_gallery_that_loads(gallery_copy):
    """Break 9: /api/characters failed (500) on galleries that load accepts: a NUL or a lone surrogate in
    a source file name, a box past the edge of its picture. Such a face is listed, without a thumbnail."""
    path = gallery_copy / "gallery.json"
    description = json.loads(path.read_text())
    description["entries"][0]["source"] = "pictures/a\0b.png"
    description["entries"][6]["source"] = "pictures/\ud800.png"
    description["entries"][12]["box"] = [0, 0, 1, 3000]  # fits a picture of the size limit, not this one
    path.write_text(json.dumps(description))
    with TestClient(app_over(gallery_copy), base_url=ORIGIN, headers={"x-animeface-token": TOKEN}) as client:
        answer = client.get("/api/characters")
    assert answer.status_code == 200
    listed = [(c["name"], c["count"], len(c["thumbnails"])) for c in answer.json()["characters"]]
    assert listed == [("gura", 6, 3), ("calli", 6, 3), ("kiara", 6, 3), ("fauna", 6, 4)]


def test_a_full_disk_is_a_clear_error_and_leaves_the_gallery_as_saved(client, gallery_copy, monkeypatch):
    """Break 16: a full disk gave a bare 500, and a forget or an undo that could not be saved stayed done in
    memory, to be saved by the next change. Now it is a JSON error saying why, and every change that could
    not be saved is taken back."""
    taught = changing(client, "/api/enroll", files=upload(SCENE), data={"name": "Newcomer"}).json()["entry"]
    before, listed = gallery_files(gallery_copy), client.get("/api/characters").json()
    full = OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as disk:
        disk.setattr(np, "save", lambda *a, **k: (_ for _ in ()).throw(full))
        for path, body in [("/api/forget", {"json": {"name": "calli"}}),
                           ("/api/unenroll", {"json": {k: taught[k] for k in ("label", "sha256", "box")}}),
                           ("/api/enroll", {"files": upload(SCENE.with_name("detect_01.jpg")), "data": {"name": "Other"}})]:
            answer = changing(client, path, **body)
            assert answer.status_code == 500, (path, answer.text)
            assert "No space left on device" in answer.json()["detail"] and str(gallery_copy) in answer.json()["detail"]
            assert client.get("/api/characters").json() == listed
    assert gallery_files(gallery_copy) == before
    assert changing(client, "/api/forget", json={"name": "fauna"}).status_code == 200  # room again
    saved = Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, progress=False).characters
    assert saved == {"gura": 6, "calli": 6, "kiara": 6, "Newcomer": 1}


class Running:
    """`animeface serve`'s server over an app, on a free port, in a thread."""

    def __init__(self, app, **limits):
        self.sock = serve.listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = serve.server(app, **limits)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self):
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            threading.Event().wait(0.05)
        return self

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port))
        conn.settimeout(30)  # only so that a failure cannot hang the run: every wait below ends sooner
        return conn

    def get(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers={"x-animeface-token": TOKEN})
        return conn.getresponse().status

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join()
        self.sock.close()


def closed_without_answer(conn: socket.socket) -> bool:
    try:
        return conn.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_idle_and_slow_connections_are_dropped_so_they_cannot_lock_the_server_out(gallery_copy):
    """Break 14: connections that sent nothing, or headers or a body a byte at a time, were kept forever;
    1,100 of them used up the descriptors and locked the server out. Now headers and bodies have
    deadlines (a slow body is answered 408), and connections beyond the limit are closed at once."""
    with Running(app_over(gallery_copy, body_seconds=1), header_seconds=1) as running:
        idle, partial, slow = running.connect(), running.connect(), running.connect()
        partial.sendall(b"GET /api/characters HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.sendall(f"POST /api/identify HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\nX-Animeface-Token: {TOKEN}\r\n"
                     "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000\r\n\r\n--x\r\n".encode())
        assert closed_without_answer(idle) and closed_without_answer(partial)
        assert slow.recv(1024).startswith(b"HTTP/1.1 408 ")
        assert running.get("/api/characters") == 200
    with Running(app_over(gallery_copy), header_seconds=60, connections=4) as running:
        held = [running.connect() for _ in range(4)]
        while len(running.server.server_state.connections) < 4:
            threading.Event().wait(0.05)
        assert closed_without_answer(running.connect()), "a connection over the limit is closed at once"
        for conn in held:
            conn.close()
        while running.server.server_state.connections:
            threading.Event().wait(0.05)
        assert running.get("/api/characters") == 200


# -- the command -----------------------------------------------------------------------------


def test_serve_on_a_port_in_use_says_so(capsys, gallery_copy):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--gallery", str(gallery_copy), "--port", str(port), "--backbone", RANDOM_BACKBONE])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    assert "Traceback" not in err


def test_serve_refuses_a_port_out_of_range(capsys):
    assert main(["serve", "--port", "70000"]) == EXIT_USAGE
    assert "--port must be from 0 to 65535" in capsys.readouterr().err


def test_import_and_help_do_not_load_the_web_framework():
    probe = ("from animeface.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "import sys\nprint([m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_page_has_its_icon(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg") and 'href="/favicon.ico"' in client.get("/").text
