"""`animeface serve`: a local web page and a JSON API over one gallery.

Only the person who started it may use it: the page, its files and every /api request
need the cookie that the one-time address printed at start-up sets (HttpOnly,
SameSite=Strict), or, for scripts, the printed token. A browser talks to it, and any
page the browser opens could try to, so the guard also refuses before a request's body
is read: a Host that is not this server (a page that re-pointed its own name at this
address), a POST whose Origin is another site, a gallery-changing POST without the
token (which only the server's own page holds), and a body over the upload limit; no
other page may frame this one. Headers and bodies must arrive within deadlines, and
connections beyond a limit are closed at once, so slow or idle clients cannot use up
the server. Pictures go through the one image loader, their pixels held from a budget
as sort holds them; nothing from a request (path, file name) ever reaches the file
system. Identify runs in many threads at once; reading or changing the gallery is
serialised by one lock, every save is atomic, and a change that cannot be saved is
taken back.
"""

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import socket
import threading
from contextlib import contextmanager
from importlib.resources import files
from typing import Annotated
from urllib.parse import parse_qsl

import numpy as np

from .boxes import Box
from .crop import THUMBNAIL_SIDE, crop_face, thumbnail_jpeg, whole_image
from .errors import AnimefaceError, GalleryError, ImageError
from .gallery import MAX_TEXT, box_problem
from .io import PixelBudget, available_cores, max_pixels, read_file
from .recognizer import FACE_MODES, Recognizer

#: The largest request body taken, in bytes: a picture and the form around it.
UPLOAD_LIMIT = 20 << 20
TOKEN_HEADER = "x-animeface-token"
#: The POSTs that change nothing, so it needs no token (the page and curl both use it).
READ_ONLY_POSTS = ("/api/identify", "/api/explain")
#: What a face enrolled through the page records as its source: the upload never was a file here.
WEB_SOURCE = "web upload"
THUMBNAILS_SHOWN = 4
#: Side of the face with its map laid over it, as /api/explain gives it (the page shows it on hover).
OVERLAY_SIDE = 160
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
STATIC = {"/app.js": ("app.js", "application/javascript"), "/style.css": ("style.css", "text/css"),
          "/favicon.ico": ("favicon.svg", "image/svg+xml")}
#: The one-time address that signs the browser in: GET /login?key=KEY.
LOGIN_PATH = "/login"
#: Sent with every answer: no other page may frame this one (clickjacking), nor a file be sniffed as another type.
SECURITY_HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"),
                    (b"x-content-type-options", b"nosniff")]
#: Seconds a client has to send a request's headers (from connecting, or from the answer before), and its body.
HEADER_SECONDS = 10
BODY_SECONDS = 60
#: Connections open at once; one more is closed at once, so that descriptors are left for the server's own files.
MAX_CONNECTIONS = 512


class Service:
    """The recognizer behind the API, safe for many request threads at once.

    Decoding and detection run in each request's own thread (the recognizer keeps
    a detector per thread), as many at once as there are cores, each holding its
    picture's pixels from a budget of the pixel limit, as sort does, so memory stays
    bounded however many pictures arrive. The network takes one picture at a time:
    OpenVINO already spreads one over every core, and pictures side by side only contend
    (benchmarks/serve_load.py, 2 cores: 7.5 against 4.8 requests/s, p95 2.0 against 3.2 s). Naming
    against the gallery, enrolling, forgetting and saving take the gallery lock,
    so no request sees a half-changed gallery and saves never interleave. Each change
    starts from the gallery as saved, which other programs may have changed meanwhile.
    """

    def __init__(self, rec: Recognizer):
        self.rec = rec
        self._gallery = threading.Lock()
        self._network = threading.Lock()
        self._workers = threading.BoundedSemaphore(available_cores())
        self._pixels = PixelBudget(max_pixels())
        #: Face thumbnails as data URLs, by (sha256, box): made in memory, never served from a path.
        self._thumbnails: dict[tuple, str | None] = {}

    @contextmanager
    def decoded(self, data: bytes, name: str):
        """The picture decoded, while it holds a worker and its pixels: what is done with it in the with
        block (detection) is counted too."""
        with self._workers, self._pixels.decoded(data, name) as rgb:
            yield rgb

    def identify(self, data: bytes, name: str, faces: str) -> list:
        """The faces of one uploaded picture, as `animeface identify` finds and names them."""
        with self.decoded(data, name) as rgb:
            boxes, crops = self.rec.face_crops(rgb, faces)
        with self._network:
            vectors = self.rec.embedder.embed(np.stack(crops)) if crops else None
        with self._gallery:
            return self.rec.name_faces(vectors, boxes)

    def explain(self, data: bytes, name: str, faces: str) -> list:
        """Why each face of one uploaded picture got its best candidate, as `animeface explain --top 1`."""
        with self.decoded(data, name) as rgb:
            boxes, crops = self.rec.face_crops(rgb, faces)
        with self._network, self._gallery:
            return self.rec.explain_crops(boxes, crops, top=1)

    def enroll(self, name: str, data: bytes, filename: str, box: list[int] | None,
               angle: float = 0.0) -> tuple[dict, dict]:
        """Enroll one face of an uploaded picture and save the gallery; returns its entry and the counts."""
        with self.decoded(data, filename) as rgb, self._gallery:
            self.rec.reload()
            with self.rec.saving():
                entry = self.rec.enroll_face(name, data, box, source=f"{WEB_SOURCE} {filename}"[:MAX_TEXT],
                                             angle=angle)
            self._thumbnails[_key(entry)] = _thumbnail(rgb, entry)
            return entry, dict(self.rec.characters)

    def unenroll(self, entry: dict) -> dict:
        """Undo one enroll: remove that face and save; returns the counts."""
        with self._gallery:
            self.rec.reload()
            with self.rec.saving():
                self.rec.forget_face(entry)
            return dict(self.rec.characters)

    def forget(self, name: str) -> int:
        with self._gallery:
            self.rec.reload()
            with self.rec.saving():
                return self.rec.forget(name)

    def characters(self) -> list[dict]:
        """Each character with its count and the thumbnails of its first few faces."""
        with self._gallery:
            shown = {name: [] for name in self.rec.characters}
            for entry in self.rec.gallery.entries:
                if len(shown[entry["label"]]) < THUMBNAILS_SHOWN:
                    shown[entry["label"]].append(dict(entry))
            counts = dict(self.rec.characters)
        return [{"name": name, "count": counts[name],
                 "thumbnails": [t for t in map(self.thumbnail, entries) if t]} for name, entries in shown.items()]

    def thumbnail(self, entry: dict) -> str | None:
        key = _key(entry)
        if key not in self._thumbnails:
            self._thumbnails[key] = self._thumbnail_from_source(entry)
        return self._thumbnails[key]

    def _thumbnail_from_source(self, entry: dict) -> str | None:
        """A face enrolled from a file (the command line), cut from that file when it is still the very
        picture enrolled: its bytes hash to the sha256 the gallery recorded, and the box lies inside it.
        The path is the gallery's, never a request's; a face enrolled through the page was never a file
        and has none after a restart."""
        if entry["source"].startswith(WEB_SOURCE):
            return None
        try:
            data = read_file(entry["source"])
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                return None
            with self.decoded(data, entry["source"]) as rgb:
                inside = not box_problem(entry["box"], rgb.shape[1], rgb.shape[0])
                return _thumbnail(rgb, entry) if inside else None
        except ImageError:
            return None


def _key(entry: dict) -> tuple:
    return entry["sha256"], tuple(entry["box"])


def _thumbnail(rgb: np.ndarray, entry: dict) -> str:
    """A small JPEG of a gallery entry's face, cut upright, as a data URL the page shows as it is."""
    h, w = rgb.shape[:2]
    box = Box(*entry["box"], angle=entry.get("angle", 0.0))
    face = whole_image(rgb, THUMBNAIL_SIDE) if list(box) == [0, 0, w, h] else crop_face(rgb, box, THUMBNAIL_SIDE)
    return _data_url(face, THUMBNAIL_SIDE)


def _data_url(face: np.ndarray, side: int) -> str:
    """A square RGB face as a JPEG data URL, `side` pixels a side, that the page shows as it is."""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(face, side)).decode()


# -- the guard, at the ASGI level: it answers before any body is read -------------------------


class Guard:
    """ASGI middleware letting in only the person who started serve, and refusing what a page
    elsewhere, a body too large or too slow, must not do."""

    def __init__(self, app, token: str, login: str, host: str, limit: int = UPLOAD_LIMIT,
                 body_seconds: float = BODY_SECONDS):
        self.app, self.token, self.login, self.host, self.limit = app, token, login, host, limit
        self.body_seconds = body_seconds
        #: The cookie the login sets: its name is this run's own, so two servers on one machine keep theirs.
        self.cookie, self.session = f"animeface-{secrets.token_hex(4)}", secrets.token_urlsafe(24)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _secured(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"] == LOGIN_PATH and scope["method"] == "GET" and self._own_host(headers.get("host", "")):
            return await self.sign_in(scope["query_string"].decode("latin-1"), send)
        refusal = self.refusal(scope["method"], scope["path"], headers)
        if refusal:
            return await _send_error(send, *refusal)
        if scope["method"] not in ("GET", "HEAD"):
            try:
                async with asyncio.timeout(self.body_seconds):
                    body = await _read_body(receive, self.limit)
            except TimeoutError:
                return await _send_error(send, 408, f"the request body did not arrive within {self.body_seconds:g} s")
            if body is None:
                return await _send_error(send, 413, self._too_large())
            receive = _replay(body)
        await self.app(scope, receive, send)

    async def sign_in(self, query: str, send) -> None:
        """The one-time address: its key, once, sets the cookie and leads to the page; then it opens nothing."""
        key = dict(parse_qsl(query)).get("key", "")
        if not (self.login and hmac.compare_digest(key.encode(), self.login.encode())):
            return await _send_error(send, 403, "this sign-in address is wrong or was used already: each works once; "
                                                "restart 'animeface serve' for a new one")
        self.login = None
        cookie = f"{self.cookie}={self.session}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode()), (b"cache-control", b"no-store"),
                                (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def refusal(self, method: str, path: str, headers: dict) -> tuple[int, str] | None:
        """(status, why) for a request refused on its headers alone, else None."""
        host = headers.get("host", "")
        if not self._own_host(host):
            return 400, f"Host {host!r} is not this server; open it by its address (e.g. 127.0.0.1)"
        token = hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.token.encode())
        if not (token or self._signed_in(headers.get("cookie", ""))):
            return 403, ("only the person who started 'animeface serve' may use it: open the one-time address it "
                         f"printed, or (a script) send the {TOKEN_HEADER} header with the token it printed")
        if method in ("GET", "HEAD"):
            return None
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return 403, f"requests from {origin} are refused: only this server's own page may send them"
        if path not in READ_ONLY_POSTS and not token:
            return 403, (f"this request changes the gallery and needs the {TOKEN_HEADER} header with the token "
                         "that 'animeface serve' printed (the page sends it)")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return 413, self._too_large()
        return None

    def _signed_in(self, cookies: str) -> bool:
        """Whether the Cookie header holds the cookie the sign-in set."""
        for part in cookies.split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie and hmac.compare_digest(value.encode(), self.session.encode()):
                return True
        return False

    def _own_host(self, host: str) -> bool:
        """Whether a Host header names this server: the address it listens on, localhost, or with a
        wildcard address any IP address or this machine's name; never another site's name."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if name in ("localhost", "127.0.0.1", "::1", self.host.lower()):
            return True
        if self.host not in WILDCARD_HOSTS:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in (socket.gethostname().lower(), socket.getfqdn().lower())

    def _too_large(self) -> str:
        return f"the request is over the upload limit of {self.limit >> 20} MiB"


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole body, counted as it streams in; None as soon as it passes the limit."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _secured(send):
    """send(), adding SECURITY_HEADERS to every answer."""
    async def secured(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return secured


def _replay(body: bytes):
    """A receive() that gives the app the body already read, then waits for the disconnect."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _send_error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# -- the app -------------------------------------------------------------------------------------


def create_app(rec: Recognizer, token: str, login: str, host: str = "127.0.0.1", limit: int = UPLOAD_LIMIT,
               body_seconds: float = BODY_SECONDS):
    """The web app (page and API) over one recognizer, behind the guard; `login` is the key of the one-time
    sign-in address (LOGIN_PATH?key=...)."""
    from fastapi import FastAPI, File, Form, HTTPException, UploadFile
    from fastapi.responses import HTMLResponse, Response
    from pydantic import BaseModel

    service = Service(rec)
    web = files("animeface") / "web"
    page = (web / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", token)
    static = {path: (web / name).read_bytes() for path, (name, _) in STATIC.items()}
    app = FastAPI(title="animeface", version=_version(), docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")

    class Name(BaseModel):
        name: str

    class FaceEntry(BaseModel):
        label: str
        sha256: str
        box: list[int]

    def bad_request(exc: Exception):
        return HTTPException(400, str(exc))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    for path, (_, media_type) in STATIC.items():
        app.add_api_route(path, lambda path=path, media_type=media_type: Response(static[path], media_type=media_type),
                          include_in_schema=False)

    def on_upload(work, picture, faces: str):
        """(name, work(bytes, name, faces)) for an uploaded picture: a bad picture or faces mode is a 400,
        an empty gallery where one is needed a 409."""
        if faces not in FACE_MODES:
            raise bad_request(f"faces must be one of {', '.join(FACE_MODES)}, got {faces!r}")
        name = picture.filename or "the picture"
        try:
            return name, work(picture.file.read(), name, faces)
        except ImageError as exc:
            raise bad_request(exc) from None
        except GalleryError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/identify")
    def identify(picture: Annotated[UploadFile, File()], faces: Annotated[str, Form()] = "auto"):
        """The faces of one picture, named or unknown: the object `animeface identify --json` prints for it."""
        name, found = on_upload(service.identify, picture, faces)
        return {"path": name, "error": None, "faces": [f.to_dict() for f in found]}

    @app.post("/api/explain")
    def explain(picture: Annotated[UploadFile, File()], faces: Annotated[str, Form()] = "auto"):
        """Why each face of one picture got its best candidate: the object `animeface explain --json --top 1`
        prints for it, each item with `overlay`, the face with its map laid over it (a JPEG data URL)."""
        from .explain import overlay

        name, items = on_upload(service.explain, picture, faces)
        return {"path": name, "error": None, "explanations": [
            {**item.to_dict(), "overlay": _data_url(overlay(item.crop, item.heat), OVERLAY_SIDE)} for item in items]}

    @app.post("/api/enroll")
    def enroll(picture: Annotated[UploadFile, File()], name: Annotated[str, Form()],
               box: Annotated[str | None, Form()] = None, angle: Annotated[float, Form()] = 0.0):
        """Enroll one face as `name`: the box [x, y, w, h] of the picture, turned upright by `angle`
        (identify's `box_angle`), or (no box) the picture as a face crop. Saves the gallery. Returns
        the face's entry, which /api/unenroll takes to undo it."""
        filename = picture.filename or "the picture"
        try:
            entry, counts = service.enroll(name, picture.file.read(), filename, _parse_box(box), angle)
        except (ImageError, ValueError) as exc:  # CharacterNameError is a ValueError
            raise bad_request(exc) from None
        return {"entry": entry, "characters": counts}

    @app.post("/api/unenroll")
    def unenroll(entry: FaceEntry):
        """Undo one enroll: remove the face of that entry and save the gallery."""
        try:
            return {"characters": service.unenroll(entry.model_dump())}
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None

    @app.get("/api/characters")
    def characters():
        """Every character with its face count and a few thumbnails (JPEG data URLs)."""
        return {"characters": service.characters()}

    @app.post("/api/forget")
    def forget(body: Name):
        """Remove a character and all its faces, and save the gallery."""
        try:
            removed = service.forget(body.name)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None
        return {"forgot": body.name, "faces": removed}

    @app.exception_handler(AnimefaceError)
    def animeface_error(request, exc):  # the gallery could not be saved, a model failed: say what
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": str(exc)}, status_code=500)

    return Guard(app, token, login, host, limit, body_seconds)


def _parse_box(text: str | None) -> list[int] | None:
    """The form's box, JSON [x, y, w, h] of whole numbers; None when not given."""
    if text is None or not text.strip():
        return None
    try:
        box = json.loads(text)
    except ValueError:
        box = None
    if not (isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box)):
        raise ValueError(f"box must be [x, y, w, h] in whole pixels, got {text[:100]!r}")
    return box


def _version() -> str:
    from . import __version__

    return __version__


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound now so that a port in use is said before the network loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise AnimefaceError(f"serve: cannot listen on {host}:{port} ({reason}); "
                             "choose another port with --port, or stop what is using it") from None


def new_token() -> str:
    return secrets.token_urlsafe(24)


def server(app, header_seconds: float = HEADER_SECONDS, connections: int = MAX_CONNECTIONS):
    """The uvicorn server for the app: HTTP/1.1 by h11 (its headers capped at 16 KiB), no websockets, headers
    due within header_seconds, at most `connections` open at once. (The body's deadline is the guard's.)"""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Deadlines(H11Protocol):
        """h11 as uvicorn runs it, which waits for a request's headers forever: here a connection over the
        limit is closed at once, and one whose next request's headers are not in within header_seconds
        of connecting, or of the answer before, is closed."""

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > connections:
                transport.close()
            else:
                self._await_headers(after=None)

        def on_response_complete(self) -> None:
            answered = self.cycle
            super().on_response_complete()
            self._await_headers(after=answered)

        def _await_headers(self, after) -> None:
            def too_slow():
                if self.cycle is after and not self.transport.is_closing():  # no new request begun
                    self.transport.close()

            self.loop.call_later(header_seconds, too_slow)

    return uvicorn.Server(uvicorn.Config(app, http=Deadlines, ws="none", log_level="warning", access_log=False))


def run(app, sock: socket.socket) -> None:
    """Serve on the socket until interrupted (Ctrl+C)."""
    server(app).run(sockets=[sock])
