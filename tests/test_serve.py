"""`animeface serve` (issue 13): the JSON API through the framework's test client, and the guard
that refuses a request before reading its body."""

import asyncio
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from animeface import Recognizer
from animeface.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from animeface.serve import UPLOAD_LIMIT, create_app

from conftest import CASCADE, RANDOM_BACKBONE, ROOT, SHARED, crops

TOKEN = "test-token"
ORIGIN = "http://127.0.0.1:8765"
#: Two faces the cascade finds.
SCENE = SHARED / "illustrations" / "set_a" / "sample1.jpg"


@pytest.fixture
def client(gallery_copy):
    rec = Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    with TestClient(create_app(rec, TOKEN), base_url=ORIGIN) as test_client:
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
    assert {"/api/identify", "/api/enroll", "/api/unenroll", "/api/characters", "/api/forget"} <= set(paths)


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
    assert Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, progress=False).characters["Newcomer"] == 1  # saved
    again = client.post("/api/identify", files=upload(SCENE)).json()["faces"]
    assert [f["label"] for f in again if f["box"] == first["box"]] == ["Newcomer"]
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
    ({"name": "x", "box": "[5000, 0, 10, 10]"}, "is not a face inside"),
    ({"name": "../etc", "box": ""}, "must not contain slashes"),
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
    app = create_app(Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, progress=False), TOKEN)
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
