"""The web page in a real browser (issue 13): headless Chromium from the system packages, driven
by Playwright, against `animeface serve` started as a user would, over a temporary gallery."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CASCADE, RANDOM_BACKBONE, ROOT, SHARED

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Two faces the cascade finds.
SCENE = SHARED / "illustrations" / "set_a" / "sample1.jpg"
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")


@pytest.fixture
def server(tmp_path, network_cache):
    """`animeface serve --port 0` over a new gallery; yields the one-time address it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANIMEFACE_BACKBONE": RANDOM_BACKBONE,
           "ANIMEFACE_CASCADE": str(CASCADE), "ANIMEFACE_CACHE": str(network_cache)}
    process = subprocess.Popen([sys.executable, "-m", "animeface", "serve", "--port", "0", "--gallery",
                                str(tmp_path / "gallery"), "-q"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        address = re.search(r"open (http://\S+) ", line)  # the one-time sign-in address
        assert address, f"serve printed {line!r}"
        yield address.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def page():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        playwright.expect.set_options(timeout=TIMEOUT_MS)  # a loaded machine identifies slowly
        yield tab
        browser.close()


def test_identify_name_an_unknown_face_and_see_the_name_next_time(server, page):
    from playwright.sync_api import expect

    page.goto(server)
    page.set_input_files("#files", str(SCENE))
    first = page.locator("#results .card").first
    expect(first.locator(".face")).to_have_count(2)
    expect(first.locator(".face .tag").first).to_have_text("unknown")

    first.locator(".face").first.click()  # its guesses open, in Identify
    expect(first.locator(".face .guesses").first).to_be_visible()
    page.click("nav a[data-page=teach]")
    first.locator(".face").first.click()
    expect(first.locator(".face .guesses").first).to_be_hidden()  # in Teach, no tooltip over the picture
    page.fill("#teach-name", "Newcomer")
    page.click("#teach-submit")
    expect(page.locator("#teach-status")).to_contain_text("Taught Newcomer")

    page.click("nav a[data-page=identify]")
    page.set_input_files("#files", str(SCENE))
    expect(page.locator("#results .card")).to_have_count(2)
    named = page.locator("#results .card").first.locator(".face").first
    expect(named.locator(".tag")).to_contain_text("Newcomer")
    named.hover()  # the guesses show the map of what matched the name
    expect(named.locator(".guesses .map img")).to_be_visible()
    expect(named.locator(".guesses .map")).to_contain_text("What matched Newcomer")

    page.click("nav a[data-page=gallery]")
    character = page.locator(".character", has_text="Newcomer")
    expect(character.locator(".count")).to_have_text("1 face")
    expect(character.locator(".thumbs img")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    character.locator("button").click()
    expect(page.locator("#characters")).to_contain_text("The gallery is empty")


#: Pictures of several shapes (tall, wide, square-ish), most with faces the cascade finds.
REPORT_PICTURES = [SHARED / "illustrations" / "set_a" / name for name in (
    "detect_01.jpg", "detect_02.jpg", "detect_03.jpg", "detect_04.jpg", "detect_06.jpg", "detect_07.jpg",
    "sample1.jpg")] + [SHARED / "illustrations" / "set_b" / "test_5.jpg"]
LONG_NAME = "Hatsune Miku of the Unusually Long Character Name That Labels Must Keep Inside"


@pytest.fixture(scope="module")
def sort_report(tmp_path_factory):
    """A real sort report: eight pictures sorted against a gallery whose one character has a long name,
    so every unknown face is captioned with that name as its best guess."""
    import animeface
    from animeface.sort import sort_folder

    from conftest import crops

    root = tmp_path_factory.mktemp("report")
    src = root / "src"
    src.mkdir()
    for path in REPORT_PICTURES:
        (src / path.name).write_bytes(path.read_bytes())
    rec = animeface.Recognizer(root / "gallery", backbone=RANDOM_BACKBONE, cascade=CASCADE, detector="cascade",
                               progress=False)
    rec.enroll(LONG_NAME, crops("gura", 0, 2), faces="whole")
    sort_folder(rec, src, root / "sorted")
    state = root / "sorted" / ".animeface"
    (journal,) = state.glob("journal-*.jsonl")
    import json

    records = {e["sha256"]: e for e in map(json.loads, journal.read_text().splitlines()) if e["op"] == "done"}
    return state / "report.html", records


@pytest.mark.parametrize("width", [1280, 800, 390])
def test_report_boxes_sit_on_the_faces_and_labels_stay_in_the_picture(page, sort_report, width):
    report, records = sort_report
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(report.as_uri())
    page.wait_for_load_state()  # the thumbnails load lazily; the layout is the picture's shape, given in the page
    cards = page.evaluate("""() => [...document.querySelectorAll('.card')].map(card => {
        const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
        const img = card.querySelector('img');
        return {card: rect(card), img: rect(img), src: img.getAttribute('src'),
                boxes: [...card.querySelectorAll('.box')].map(rect),
                labels: [...card.querySelectorAll('.label')].map(rect)};
    })""")
    assert len(cards) >= len(REPORT_PICTURES) and sum(len(c["labels"]) for c in cards) >= 3
    for card in cards:
        record = records[card["src"].removeprefix("thumbs/").removesuffix(".jpg")]
        height, width_px = record["shape"]
        x0, y0, w0, h0 = card["img"]
        assert w0 / h0 == pytest.approx(width_px / height, rel=0.02), "the picture keeps its shape"
        assert len(card["boxes"]) == len(record["faces"])
        for (x, y, w, h), face in zip(card["boxes"], record["faces"]):
            bx, by, bw, bh = face["box"]
            expected = [x0 + bx * w0 / width_px, y0 + by * h0 / height, bw * w0 / width_px, bh * h0 / height]
            assert [x, y, w, h] == pytest.approx(expected, abs=1.0), "the box sits on the face"
            cx, cy, cw, ch = card["card"]
            assert cx <= x and x + w <= cx + cw + 0.5 and cy <= y and y + h <= cy + ch + 0.5, "inside its card"
        for x, y, w, h in card["labels"]:
            assert x0 - 0.5 <= x and x + w <= x0 + w0 + 0.5 and y0 - 0.5 <= y and y + h <= y0 + h0 + 0.5, \
                "the label stays inside the picture"
    if width == 1280:  # the cards fill the row, rather than leave a third of the page empty
        grid = page.evaluate("(() => { const r = document.querySelector('.grid').getBoundingClientRect(); "
                             "return [r.left, r.width]; })()")
        first_row = [c["card"] for c in cards if c["card"][1] == cards[0]["card"][1]]
        assert max(x + w for x, _, w, _ in first_row) - grid[0] >= 0.9 * grid[1]


def test_on_a_phone_every_name_stays_inside_its_picture(server, page):
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(server)
    for scene in (SCENE, SHARED / "illustrations" / "set_b" / "test_5.jpg"):
        page.set_input_files("#files", str(scene))
    from playwright.sync_api import expect

    expect(page.locator("#results figure")).to_have_count(2)
    page.wait_for_function("""() => [...document.querySelectorAll('#results .card')].every(card =>
        card.querySelectorAll('.face').length == +(card.querySelector('h2').textContent.match(/(\\d+) face/) || [0, 0])[1])""")
    assert page.locator("#results .face").count() >= 2
    icon = page.request.get(server.split("/login")[0] + "/favicon.ico")
    assert icon.status == 200, "the browser's icon request is answered"
    inside = page.evaluate("""() => [...document.querySelectorAll('#results figure')].flatMap(figure => {
        const picture = figure.querySelector('img').getBoundingClientRect();
        return [...figure.querySelectorAll('.tag')].map(tag => {
            const r = tag.getBoundingClientRect();
            return r.left >= picture.left - 3.5 && r.right <= picture.right + 3.5 && r.top >= picture.top - 3.5
                   && r.bottom <= picture.bottom + 3.5;
        });
    })""")
    assert inside and all(inside)
