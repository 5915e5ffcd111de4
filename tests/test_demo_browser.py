"""The demo page in a real headless Chromium: generate a maze, solve it with the expert, see the drawing.

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` package (no browser download).
``SKETCHMIND_WRITE_SCREENSHOT=1`` also copies the screenshot to docs/images/demo.png for the README.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "demo.png"

# CI (.ci/run) sets SKETCHMIND_REQUIRE_BROWSER=1: there a missing browser fails the run instead of skipping it.
if not CHROMIUM.is_file():
    missing = f"no headless browser: {CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("SKETCHMIND_REQUIRE_BROWSER") == "1":
        raise RuntimeError(missing)
    pytest.skip(missing, allow_module_level=True)
import gradio  # noqa: E402, F401 - a dev dependency: an import error is a failure, not a skip
from loopback import served_demo  # noqa: E402
from playwright import sync_api  # noqa: E402


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with served_demo("expert") as address:
        yield address


def test_generate_solve_and_screenshot(url: str, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url)

            page.locator("#generate").click()
            page.locator("#input-image img").wait_for()
            page.wait_for_function(  # the puzzle's own question fills the question box
                "() => [...document.querySelectorAll('textarea')].some(t => t.value.startsWith('This maze'))"
            )

            page.locator("#solve").click()
            view = page.locator("#chat img").first
            view.wait_for()  # a rendered view, inline in the chat
            sync_api.expect(page.locator("#answer textarea")).to_have_value("2")
            sync_api.expect(page.locator("#status")).to_contain_text("Correct")
            sync_api.expect(page.locator("#chat")).to_contain_text("box 'start'")
            sync_api.expect(page.locator("#chat")).to_contain_text("changes direction 2 times")  # the last thought
            sync_api.expect(page.locator("#gallery img").nth(1)).to_be_visible()
            page.wait_for_function(  # the last view (in sight: the chat scrolls to the end) has loaded
                "() => { const i = [...document.querySelectorAll('#chat img')].pop(); return i && i.naturalWidth > 0; }"
            )

            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("SKETCHMIND_WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
