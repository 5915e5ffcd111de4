"""The demo page in a real headless Chromium: the generate/solve path, the step-by-step path, the upload path.

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` package (no browser download).
Every test fails on any console error or uncaught exception in the page, and saves a full-page
screenshot under ``runs/browser/`` (kept by CI as artifacts), failed or not.
``SKETCHMIND_WRITE_SCREENSHOT=1`` also copies the solve screenshot to docs/images/demo.png for the README.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "demo.png"
SHOTS = ROOT / "runs" / "browser"

# CI (.ci/run) sets SKETCHMIND_REQUIRE_BROWSER=1: there a missing browser fails the run instead of skipping it.
if not CHROMIUM.is_file():
    missing = f"no headless browser: {CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("SKETCHMIND_REQUIRE_BROWSER") == "1":
        raise RuntimeError(missing)
    pytest.skip(missing, allow_module_level=True)
import gradio  # noqa: E402, F401 - a dev dependency: an import error is a failure, not a skip
from loopback import served_demo  # noqa: E402
from playwright import sync_api  # noqa: E402

from sketchmind.demo.app import FAMILY_HELP, MODE_HELP  # noqa: E402
from sketchmind.trace import Step, Trace  # noqa: E402

# Generous waits: a model run on a busy CI machine (or one training beside the tests) takes seconds, not ms.
sync_api.expect.set_options(timeout=60_000)

# The last message of the chat, and whether it is in sight: inside the chat's scroll box and on the page.
LAST_MESSAGE_IN_SIGHT = """() => {
  const box = document.querySelector("#chat .bubble-wrap");
  const last = box && [...box.querySelectorAll(".message")].pop();
  if (!last) return false;
  const r = last.getBoundingClientRect(), b = box.getBoundingClientRect();
  return r.top >= b.top - 1 && r.bottom <= b.bottom + 1 && r.top >= 0 && r.bottom <= window.innerHeight;
}"""

# Text in the chat drawn over a view (a caption shown as the image's label covers the top of a small view).
COVERED_VIEWS = """() => {
  const views = [...document.querySelectorAll("#chat img")];
  // The chat's own label ("Reasoning") floats over the scrolled message list: a view scrolled up under it is
  // scrolled out of sight, not covered, so only text inside the messages counts.
  const texts = [...document.querySelectorAll("#chat *")].filter((e) =>
    [...e.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim()) &&
    !e.closest('[data-testid="block-label"]') &&
    getComputedStyle(e).visibility !== "hidden");
  const covered = [];
  views.forEach((view, k) => {
    const a = view.getBoundingClientRect();
    for (const text of texts) {
      const b = text.getBoundingClientRect();
      if (b.left < a.right - 1 && b.right > a.left + 1 && b.top < a.bottom - 1 && b.bottom > a.top + 1)
        covered.push(`view ${k + 1} under "${text.textContent.trim().slice(0, 60)}"`);
    }
  });
  return covered;
}"""

# The gallery's thumbnails: each one's box, and the gallery's.
GALLERY_BOXES = """() => {
  const gallery = document.querySelector("#gallery");
  const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  return { gallery: box(gallery), thumbs: [...gallery.querySelectorAll("img")].map(box) };
}"""

# The trace download's name as shown, and whether the page had to cut it short.
DOWNLOAD_NAME = """() => {
  const stem = document.querySelector("#trace-file .stem"), ext = document.querySelector("#trace-file .ext");
  return stem && ext ? [stem.textContent + ext.textContent, stem.scrollWidth <= stem.clientWidth + 1] : null;
}"""


def plain(markdown: str) -> str:
    return markdown.replace("**", "")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with served_demo("expert") as address:
        yield address


@pytest.fixture(scope="module")
def default_url() -> Iterator[str]:
    """The demo with the shipped policy preselected, as `sketchmind demo` starts by default."""
    with served_demo("default") as address:
        yield address


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def opened(browser: Any, url: str, name: str) -> Iterator[Any]:
    """A page on ``url``; on leaving, its screenshot goes to runs/browser/NAME.png and any console error fails."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.set_default_timeout(60_000)
    try:
        page.goto(url)
        yield page
        page.wait_for_timeout(300)  # late errors (a view that fails to load) still count
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        page.close()
    assert errors == [], f"console errors in the page: {errors}"


def generate_maze(page: Any) -> None:
    page.locator("#generate").click()
    page.locator("#input-image img").wait_for()
    sync_api.expect(page.locator("#question textarea")).to_have_value(re.compile("^This maze"))


def pick(page: Any, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_generate_solve_and_screenshot(browser: Any, url: str) -> None:
    with opened(browser, url, "demo-solve") as page:
        for family, line in FAMILY_HELP.items():  # each family explains itself in one line
            pick(page, "#family", family)
            sync_api.expect(page.locator("#family-help")).to_have_text(plain(line))
        pick(page, "#family", "maze")
        for mode in ("text", "draw"):  # the expert's modes (the upload test covers the others)
            page.locator("#mode label", has_text=mode).click()
            sync_api.expect(page.locator("#mode-help")).to_have_text(plain(MODE_HELP[mode]))
        generate_maze(page)
        sync_api.expect(page.locator("#model-note")).to_have_text("")  # a generated puzzle needs no note

        page.locator("#solve").click()
        page.locator("#chat img").first.wait_for()  # a rendered view, inline in the chat
        sync_api.expect(page.locator("#answer textarea")).to_have_value("2")
        sync_api.expect(page.locator("#status")).to_contain_text("Correct")
        sync_api.expect(page.locator("#chat")).to_contain_text("box 'start'")
        sync_api.expect(page.locator("#chat")).to_contain_text("view 2: box 'start' on view 1")  # a caption
        sync_api.expect(page.locator("#chat")).to_contain_text("changes direction 2 times")  # the last thought
        sync_api.expect(page.locator("#gallery img").nth(1)).to_be_visible()
        page.wait_for_function(  # every view in the chat has loaded
            "() => [...document.querySelectorAll('#chat img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        page.wait_for_function(LAST_MESSAGE_IN_SIGHT)  # the chat has scrolled to the answer
        assert page.evaluate(COVERED_VIEWS) == []  # captions sit above the views, not over their top
        name, whole = page.evaluate(DOWNLOAD_NAME)
        assert name == "sketchmind-trace-maze-L1-0-seed0-draw.zip" and whole  # a readable name, not "m….zip"
    shot = SHOTS / "demo-solve.png"
    assert shot.stat().st_size > 10_000
    if os.environ.get("SKETCHMIND_WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_step_by_step_accepting_to_the_answer(browser: Any, url: str) -> None:
    with opened(browser, url, "demo-step-by-step") as page:
        generate_maze(page)
        page.locator("#step-by-step input").check()
        page.locator("#solve").click()
        page.locator("#pause-panel").wait_for()
        sync_api.expect(page.locator("#status")).to_contain_text("Paused before drawing turn 1")

        # One view so far (the input): the gallery shows it as a thumbnail, whole, not as a huge crop.
        sync_api.expect(page.locator("#gallery img")).to_have_count(1)
        page.wait_for_function("() => document.querySelector('#gallery img').naturalWidth > 0")
        boxes = page.evaluate(GALLERY_BOXES)
        (left, top, right, bottom), [(x1, y1, x2, y2)] = boxes["gallery"], boxes["thumbs"]
        assert x2 - x1 <= (right - left) / 4, boxes  # a thumbnail's width, not the whole row's
        assert left <= x1 and top <= y1 and x2 <= right and y2 <= bottom, boxes  # all of it in sight

        # The person scrolls back up the chat and accepts each step, over a slow link: the views arrive
        # after the messages, and each one that loads pushes the end of the chat further down.
        page.evaluate("() => { document.querySelector('#chat .bubble-wrap').scrollTop = 0; }")
        slow = page.context.new_cdp_session(page)
        slow.send("Network.enable")
        slow.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 300, "downloadThroughput": 150_000, "uploadThroughput": 150_000},
        )
        for _ in range(10):
            if page.locator("#answer textarea").input_value():
                break
            before = page.locator("#status").inner_text()
            page.locator("#accept").click()
            page.wait_for_function(  # the step has run: paused before the next turn, or done
                "(before) => { const now = document.querySelector('#status').innerText;"
                " return now !== before && (now.startsWith('❚❚') || now.includes('Correct')); }",
                arg=before,
                timeout=90_000,
            )
        sync_api.expect(page.locator("#answer textarea")).to_have_value("2")
        sync_api.expect(page.locator("#status")).to_contain_text("Correct")
        sync_api.expect(page.locator("#pause-panel")).to_be_hidden()
        # The chat has scrolled to the answer, and it is in sight on the page.
        page.wait_for_function(LAST_MESSAGE_IN_SIGHT, timeout=10_000)
        last = page.locator("#chat .message").last
        sync_api.expect(last).to_contain_text("Answer: 2")


@pytest.fixture
def recorded(tmp_path: Path) -> str:
    """A ``replay:`` model that boxes a corner of any image and answers "noise" (a general model's stand-in)."""
    trace = Trace(question="What is in the corner?", protocol="sketchmind", model="recorded")
    box = '{"name": "box", "arguments": {"bbox": [10, 10, 80, 60], "label": "corner"}}'
    crop = '{"name": "crop", "arguments": {"bbox": [10, 10, 80, 60]}}'  # a small view: 70x50 pixels
    trace.add_step(Step(index=1, raw=f"<think>Box the top-left corner.</think><tool_call>{box}</tool_call>"))
    trace.add_step(Step(index=2, raw=f"<think>Look closer.</think><tool_call>{crop}</tool_call>"))
    trace.add_step(Step(index=3, raw="<think>Only noise there.</think><answer>noise</answer>"))
    trace.save(tmp_path / "recorded")
    return f"replay:{tmp_path / 'recorded'}"


def test_upload_path_notes_the_specialist_and_a_refusal_keeps_the_run(
    browser: Any, default_url: str, recorded: str, tmp_path: Path
) -> None:
    import numpy as np
    from PIL import Image

    upload = tmp_path / "holiday photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8), "RGB").save(upload)
    with opened(browser, default_url, "demo-upload") as page:
        page.locator("#input-image input[type=file]").set_input_files(str(upload))
        note = page.locator("#model-note")
        sync_api.expect(note).to_contain_text("grid-puzzle specialist", timeout=60_000)
        sync_api.expect(note).to_contain_text("openai:NAME")
        for mode in ("draw", "text", "latent", "auto"):  # the shipped policy has all four modes
            page.locator("#mode label", has_text=mode).click()
            sync_api.expect(page.locator("#mode-help")).to_have_text(plain(MODE_HELP[mode]))
        page.locator("#mode label", has_text="draw").click()

        # A general model instead (here a recorded one): the note goes, the run draws on the upload.
        page.locator("#model input").fill(recorded)
        page.locator("#model input").press("Enter")
        sync_api.expect(note).to_have_text("")
        page.locator("#question textarea").fill("What is in the top-left corner?")
        page.locator("#solve").click()
        sync_api.expect(page.locator("#answer textarea")).to_have_value("noise")
        sync_api.expect(page.locator("#status")).to_contain_text("no ground truth")
        sync_api.expect(page.locator("#chat")).to_contain_text("box 'corner'")
        sync_api.expect(page.locator("#chat img")).to_have_count(2)  # view 2 drawn on the upload, view 3 cropped
        sync_api.expect(page.locator("#chat")).to_contain_text("view 3: crop on view 2 (70x50)")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chat img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert page.evaluate(COVERED_VIEWS) == []
        name, whole = page.evaluate(DOWNLOAD_NAME)
        assert name == "sketchmind-trace-holiday-photo-draw.zip" and whole

        # The expert cannot play an upload: the note says so, and Solve is refused without clearing the run.
        pick(page, "#model", "expert (generated puzzles only)")
        sync_api.expect(note).to_contain_text("only plays generated puzzles")
        page.locator("#solve").click()
        sync_api.expect(page.locator("#status")).to_contain_text("only plays generated puzzles")
        sync_api.expect(page.locator("#answer textarea")).to_have_value("noise")
        sync_api.expect(page.locator("#chat")).to_contain_text("box 'corner'")
        sync_api.expect(page.locator("#chat img")).to_have_count(2)
        assert page.evaluate(DOWNLOAD_NAME)[0] == "sketchmind-trace-holiday-photo-draw.zip"


def test_a_console_error_fails_a_browser_test(browser: Any, url: str) -> None:
    """The check every test above ends with: an error in the page's console is a failure."""
    with (
        pytest.raises(AssertionError, match=r"console errors in the page: .*boom"),
        opened(browser, url, "console-check") as page,
    ):
        page.evaluate("() => console.error('boom')")
