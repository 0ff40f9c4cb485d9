"""The sort report: report.csv (one row per source file) and report.html (a contact sheet).

Both are rendered from the journal's records, so a resumed run reports every
file. Thumbnails are small JPEG files under .animeface/thumbs/, named by the
picture's sha256; the page links them by relative path and draws the face boxes
with CSS over them, so it opens from disk in any browser, with no server.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from . import files

THUMB_SIDE = 240
#: What a spreadsheet takes for the start of a formula, when a cell begins with it.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def save_thumbnail(rgb: np.ndarray, path: Path) -> None:
    """A JPEG at most THUMB_SIDE pixels on its long side, written atomically; kept if already there."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb)
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    try:
        files.write_file(path, lambda fh: img.save(fh, "JPEG", quality=80))
    except FileExistsError:  # another thread saved the same picture meanwhile
        pass


def write_reports(state_dir: Path, records: list[dict], summary) -> None:
    """report.csv and report.html in state_dir, each written to a temporary name and renamed.
    A file name that is not valid UTF-8 shows its undecodable bytes as backslash escapes."""
    table = io.StringIO(newline="")
    _csv(table, records)
    for name, text in (("report.csv", table.getvalue()), ("report.html", _html(state_dir, records, summary))):
        data = text.encode("utf-8", "backslashreplace")
        files.write_file(state_dir / name, lambda fh: fh.write(data), replace=True)


def cell(text: str) -> str:
    """A cell as text, never a formula: one that would start one (a character or file name can)
    gets a leading quote, as spreadsheets write text that looks like a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv(fh, records: list[dict]) -> None:
    out = csv.writer(fh)
    out.writerow(["source", "status", "characters", "scores", "boxes", "destinations", "source_removed", "note"])
    for r in records:
        faces = r["faces"]
        out.writerow(cell(text) for text in [
            r["src"], r["status"],
            ";".join(f["label"] or f.get("group", "unknown") for f in faces),
            ";".join(f"{f['score']:.3f}" if f["label"] or not f.get("best") else f"best guess {f['best'][0]} {f['best'][1]:.3f}"
                     for f in faces),
            ";".join(" ".join(str(v) for v in f["box"]) for f in faces),
            ";".join(p["path"] for p in r["placed"]),
            "yes" if r["removed"] else "no",
            r["reason"] or "; ".join(f"identical file already at {p['path']}" for p in r["placed"]
                                     if p["how"] == "identical"),
        ])


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ccc; }
table.summary td { padding: 1px 12px 1px 0; } .muted { color: #777; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; align-items: start; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 6px; min-width: 0; }
.pic { position: relative; display: block; margin: 0 auto; overflow: hidden; }
.pic img { position: absolute; inset: 0; width: 100%; height: 100%; }
.box { position: absolute; border: 2px solid #e0282e; box-sizing: border-box; }
.box.unknown { border: 2px dashed #f0a000; }
.box.other { border: 1px solid rgba(255, 255, 255, .7); }
.label { position: absolute; box-sizing: border-box; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
         font: bold 11px/1.3 sans-serif; background: #e0282e; color: #fff; padding: 0 3px; }
.label.unknown { background: #f0a000; }
.name { font-size: 12px; word-break: break-all; margin-top: 4px; } .faces { font-size: 12px; color: #444; }
table.left td { padding: 2px 10px 2px 0; vertical-align: top; }
"""
#: The tallest a thumbnail is shown, in CSS pixels: a tall picture is narrowed to keep its shape.
SHOWN_HEIGHT = 240


def _html(state_dir: Path, records: list[dict], summary) -> str:
    e = html.escape
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for r in records:
        for p in r["placed"]:
            groups.setdefault(p["folder"], []).append((r, p))
    order = (sorted(k for k in groups if not k.startswith("_")) + [k for k in ("_unknown",) if k in groups]
             + sorted(k for k in groups if k.startswith("_unknown/")) + [k for k in ("_noface",) if k in groups])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>animeface sort report</title>"
             f"<style>{CSS}</style></head><body><h1>animeface sort report</h1>",
             f"<p class='muted'>{summary.files} file(s) in {summary.elapsed:.1f} s; copied {summary.copied}, "
             f"already there {summary.identical}, sources removed {summary.removed}"
             + (f"; {summary.resumed} done before an interruption" if summary.resumed else "") + "</p>",
             "<table class='summary'>"]
    parts += [f"<tr><td><a href='#{e(k)}'>{e(k)}</a></td><td>{len(groups[k])}</td></tr>" for k in order]
    parts.append(f"<tr><td><a href='#left'>left in place</a></td><td>{len(summary.left)}</td></tr></table>")
    for key in order:
        parts.append(f"<h2 id='{e(key)}'>{e(key)} <span class='muted'>({len(groups[key])})</span></h2><div class='grid'>")
        parts += [_card(state_dir, r, p) for r, p in groups[key]]
        parts.append("</div>")
    if summary.left:
        parts.append("<h2 id='left'>Left in place</h2><table class='left'>")
        parts += [f"<tr><td>{e(path)}</td><td class='muted'>{e(why)}</td></tr>" for path, why in summary.left]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _card(state_dir: Path, r: dict, placed: dict) -> str:
    """One thumbnail: the faces that put it in this folder boxed and captioned, the others faintly."""
    e = html.escape
    height, width = r["shape"]
    folder = placed["folder"]
    mine = [f for f in r["faces"] if f["label"] == folder or (not f["label"] and f.get("group", "_unknown") == folder)]
    boxes, labels = [], []
    for f in r["faces"]:
        x, y, w, h = f["box"]
        left, top = 100 * x / width, 100 * y / height
        style = f"left:{left:.2f}%;top:{top:.2f}%;width:{100 * w / width:.2f}%;height:{100 * h / height:.2f}%"
        kind = ("" if f["label"] else " unknown") + ("" if f in mine else " other")
        boxes.append(f"<div class='box{kind}' style='{style}'></div>")
        if f in mine:  # the caption sits in the box's top corner and never leaves the picture (its text: the title)
            labels.append(f"<span class='label{kind}' style='left:{left:.2f}%;top:{top:.2f}%;max-width:{100 - left:.2f}%'"
                          f" title='{e(_face_text(f))}'>{e(_face_text(f))}</span>")
    others = len(r["faces"]) - len(mine)
    faces = ", ".join(_face_text(f) for f in mine) + (f" (+{others} other face(s))" if others else "")
    target = quote(os.fsencode(Path(os.path.relpath(placed["path"], state_dir)).as_posix()))
    note = " (already there)" if placed["how"] == "identical" else ""
    every = "; ".join(_face_text(f) for f in r["faces"]) or "no face"
    # the picture's own shape, at most SHOWN_HEIGHT tall: the boxes, placed in shares of it, sit on the faces at any width
    shape = f"aspect-ratio:{width}/{height};width:min(100%,{SHOWN_HEIGHT * width / height:.0f}px)"
    return (f"<div class='card'><a class='pic' style='{shape}' href='{e(target)}'>"
            f"<img loading='lazy' src='thumbs/{r['sha256']}.jpg' alt=''>{''.join(boxes + labels)}</a>"
            f"<div class='name' title='{e(r['src'])}'>{e(Path(r['src']).name)}{note}</div>"
            f"<div class='faces' title='{e(every)}'>{e(faces or 'no face')}</div></div>")


def _face_text(face: dict) -> str:
    """A known face's name and score; an unknown face's best guess with its probability, not one minus it."""
    if face["label"] or not face.get("best"):
        return f"{face['label'] or 'unknown'}" + (f" {face['score']:.2f}" if face["label"] else "")
    return f"unknown (best guess {face['best'][0]} {face['best'][1]:.2f})"
