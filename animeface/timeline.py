"""The video command's output folder: timeline.html, timeline.png and tracks.csv.

One lane per character (unknown faces last), a bar for each of its tracks, for
each clip of a run. The page embeds each track's face thumbnail, so it opens from
disk with nothing beside it. Every file is written atomically and never replaces
one already there.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from . import files
from .errors import AnimefaceError
from .report import cell

FILES = ("timeline.html", "timeline.png", "tracks.csv")
UNKNOWN = "unknown"
#: The PNG's size: its width, a lane's height, the width of the names' column.
WIDTH, LANE, NAMES = 1200, 40, 200
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (188, 189, 34), (23, 190, 207))
GREY = (150, 150, 150)


@dataclass
class ClipRun:
    """What the video command found in one clip: its length, the frames sampled, its tracks, and
    the error that stopped it (a truncated clip keeps the tracks read before it)."""

    clip: str
    seconds: float = 0.0
    sampled: int = 0
    tracks: list = field(default_factory=list)
    error: str | None = None


def check_free(folder: Path) -> None:
    """AnimefaceError if the timeline cannot be written into folder without replacing a file."""
    problem = files.taken(Path(folder), FILES)
    if problem:
        raise AnimefaceError(problem)


def write(folder: Path, runs: list[ClipRun]) -> Path:
    """Write the three files into folder (made if missing); returns the page's path."""
    from .video import on_screen

    folder = Path(folder)
    check_free(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    _csv(table, runs)
    picture = io.BytesIO()
    _png(runs, on_screen).save(picture, "PNG")
    files.write_bytes(folder / "tracks.csv", table.getvalue().encode("utf-8", "backslashreplace"))
    files.write_bytes(folder / "timeline.png", picture.getvalue())
    files.write_bytes(folder / "timeline.html", _html(runs, on_screen).encode("utf-8", "backslashreplace"))
    return folder / "timeline.html"


def _lanes(tracks, on_screen) -> list[tuple[str | None, float, list]]:
    """(label, seconds on screen, its tracks) per character, most seen first, unknown faces last."""
    seconds = on_screen(tracks)
    order = [label for label in seconds if label is not None] + ([None] if None in seconds else [])
    return [(label, seconds[label], [t for t in tracks if t.label == label]) for label in order]


def _colour(label: str | None) -> tuple[int, int, int]:
    return GREY if label is None else PALETTE[zlib.crc32(label.encode("utf-8", "backslashreplace")) % len(PALETTE)]


def _csv(fh, runs: list[ClipRun]) -> None:
    out = csv.writer(fh)
    out.writerow(["clip", "track", "start", "end", "label", "score", "frames", "at", "x", "y", "w", "h", "note"])
    for run in runs:
        for t in sorted(run.tracks, key=lambda t: t.number):
            x, y, w, h = t.face.box
            out.writerow(cell(str(v)) for v in [
                run.clip, t.number, f"{t.start:.3f}", f"{t.end:.3f}", t.label or UNKNOWN, f"{t.face.score:.3f}",
                t.frames, f"{t.at:.3f}", x, y, w, h, t.face.reason or ""])


def _png(runs: list[ClipRun], on_screen):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    blocks = [(run, _lanes(run.tracks, on_screen)) for run in runs]
    height = sum(30 + (LANE * max(len(lanes), 1) + 24 if run.sampled else 0) for run, lanes in blocks) + 10
    img = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    top = 10
    span = WIDTH - NAMES - 20
    for run, lanes in blocks:
        draw.text((10, top), run.error or f"{run.clip} ({run.seconds:.1f} s)", fill=(0, 0, 0), font=font)
        top += 30
        if not run.sampled:
            continue
        scale = span / max(run.seconds, 1e-6)
        if not lanes:
            draw.text((10, top + 12), "no faces", fill=GREY, font=font)
        for i, (label, seconds, tracks) in enumerate(lanes):
            y = top + i * LANE
            draw.rectangle((0, y, WIDTH, y + LANE - 1), fill=(248, 248, 248) if i % 2 else (255, 255, 255))
            thumb = next((t.thumbnail for t in tracks if t.thumbnail), None)
            if thumb:
                img.paste(Image.open(io.BytesIO(thumb)).convert("RGB").resize((LANE - 4, LANE - 4)), (4, y + 2))
            draw.text((LANE + 6, y + 4), label or UNKNOWN, fill=(0, 0, 0), font=font)
            draw.text((LANE + 6, y + 21), f"{seconds:.1f} s", fill=(90, 90, 90), font=font)
            for t in tracks:
                x0 = NAMES + t.start * scale
                draw.rectangle((x0, y + 8, max(NAMES + t.end * scale, x0 + 2), y + LANE - 8), fill=_colour(label))
        top += LANE * max(len(lanes), 1)
        step = _tick(run.seconds)
        for k in range(int(run.seconds // step) + 1):
            x = NAMES + k * step * scale
            draw.line((x, top, x, top + 5), fill=(0, 0, 0))
            draw.text((x + 2, top + 4), f"{k * step:g} s", fill=(90, 90, 90), font=font)
        top += 24
    return img


def _tick(seconds: float) -> float:
    """A round step between the axis's labels: about ten of them."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if seconds / step <= 10:
            return step
    return 7200


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ccc; }
.muted { color: #777; } .error { color: #b00; }
.lane { display: flex; align-items: center; height: 52px; border-bottom: 1px solid #eee; }
.who { width: 220px; flex: none; display: flex; align-items: center; gap: 6px; }
.who img { width: 44px; height: 44px; border-radius: 4px; }
.time { position: relative; flex: 1; height: 44px; background: #fff; border: 1px solid #ddd; }
.bar { position: absolute; top: 3px; bottom: 3px; min-width: 3px; border-radius: 3px; overflow: hidden; opacity: .85; }
.bar img { height: 100%; }
table.tracks td, table.tracks th { padding: 1px 10px 1px 0; text-align: left; vertical-align: middle; }
table.tracks img { width: 32px; height: 32px; }
"""


def _html(runs: list[ClipRun], on_screen) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>animeface video timeline</title>"
             f"<style>{CSS}</style></head><body><h1>Who appears when</h1>"]
    for run in runs:
        lanes = _lanes(run.tracks, on_screen)
        parts.append(f"<h2>{e(run.clip)}</h2><p class='muted'>{run.seconds:.1f} s, {run.sampled} frames sampled, "
                     f"{len(run.tracks)} track(s)</p>")
        if run.error:
            parts.append(f"<p class='error'>{e(run.error)}</p>")
        if not lanes:
            parts.append("<p>No faces.</p>")
        for label, seconds, tracks in lanes:
            thumb = next((t.thumbnail for t in tracks if t.thumbnail), None)
            parts.append(f"<div class='lane'><div class='who'>{_img(thumb)}<div>{e(label or UNKNOWN)}<br>"
                         f"<span class='muted'>{seconds:.1f} s</span></div></div><div class='time'>")
            r, g, b = _colour(label)
            for t in tracks:
                left, width = 100 * t.start / max(run.seconds, 1e-6), 100 * (t.end - t.start) / max(run.seconds, 1e-6)
                parts.append(f"<div class='bar' style='left:{left:.3f}%;width:{width:.3f}%;background:rgb({r},{g},{b})' "
                             f"title='{e(_describe(t), quote=True)}'>{_img(t.thumbnail)}</div>")
            parts.append("</div></div>")
        if run.tracks:
            parts.append("<table class='tracks'><tr><th></th><th>track</th><th>from</th><th>to</th><th>who</th>"
                         "<th>frames</th><th>box</th></tr>")
            for t in sorted(run.tracks, key=lambda t: t.start):
                parts.append(f"<tr><td>{_img(t.thumbnail)}</td><td>{t.number}</td><td>{t.start:.2f} s</td>"
                             f"<td>{t.end:.2f} s</td><td>{e(_who(t))}</td><td>{t.frames}</td>"
                             f"<td>{tuple(t.face.box)} at {t.at:.2f} s</td></tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _img(jpeg: bytes | None) -> str:
    return f"<img alt='' src='data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}'>" if jpeg else ""


def _who(track) -> str:
    face = track.face
    if face.label:
        return f"{face.label} {face.score:.2f}"
    guess = face.candidates[0] if face.candidates else None
    return f"{UNKNOWN} (best guess {guess[0]} {guess[1]:.2f})" if guess else UNKNOWN


def _describe(track) -> str:
    return f"{_who(track)}: {track.start:.2f}-{track.end:.2f} s, {track.frames} frames"
