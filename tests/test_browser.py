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
        yield tab
        browser.close()


def test_identify_name_an_unknown_face_and_see_the_name_next_time(server, page):
    from playwright.sync_api import expect

    page.goto(server)
    page.set_input_files("#files", str(SCENE))
    first = page.locator("#results .card").first
    expect(first.locator(".face")).to_have_count(2)
    expect(first.locator(".face .tag").first).to_have_text("unknown")

    page.click("nav a[data-page=teach]")
    first.locator(".face").first.click()
    page.fill("#teach-name", "Newcomer")
    page.click("#teach-submit")
    expect(page.locator("#teach-status")).to_contain_text("Taught Newcomer")

    page.click("nav a[data-page=identify]")
    page.set_input_files("#files", str(SCENE))
    expect(page.locator("#results .card")).to_have_count(2)
    expect(page.locator("#results .card").first.locator(".face .tag").first).to_contain_text("Newcomer")

    page.click("nav a[data-page=gallery]")
    character = page.locator(".character", has_text="Newcomer")
    expect(character.locator(".count")).to_have_text("1 face")
    expect(character.locator(".thumbs img")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    character.locator("button").click()
    expect(page.locator("#characters")).to_contain_text("The gallery is empty")
