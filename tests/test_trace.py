"""Traces: save/load round trip, PNGs per view, incremental and crash-safe saving, and the HTML viewer."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sketchmind import Canvas, View
from sketchmind.trace import STATUSES, Step, Trace, TraceError
from sketchmind.viewer import write_html

XSS = "<script>alert(1)</script>"


def solved() -> tuple[Trace, Canvas]:
    """A small real solve: two drawing steps, one failed call, an answer."""
    canvas = Canvas(None, whiteboard_size=(200, 100))
    trace = Trace(question="Which box is left? «é» 🙂", protocol="sketchmind", model="test-model", meta={"seed": 3})
    first = canvas.apply("box", {"bbox": [10, 10, 50, 50], "label": "A"})
    second = canvas.apply("line", {"start": [60, 20], "end": [150, 80], "label": "L"})
    assert isinstance(first, View) and isinstance(second, View)
    trace.add_step(
        Step(
            index=1,
            thought=f"Draw A first. {XSS}",
            calls=[
                {"name": "box", "arguments": {"bbox": [10, 10, 50, 50], "label": "A"}},
                {"name": "line", "arguments": {"start": [60, 20], "end": [150, 80], "label": "L"}},
            ],
            view_ids=[first.index, second.index],
            raw=f"<think>Draw A first. {XSS}</think>",
            tokens_in=120,
            tokens_out=30,
            seconds=1.25,
            render_seconds=0.004,
        )
    )
    error = canvas.apply("box", {"bbox": [10, 10, 500, 50]})
    assert not isinstance(error, View)
    trace.add_step(
        Step(
            index=2,
            thought="Oops, too wide.",
            calls=[{"name": "box", "arguments": {"bbox": [10, 10, 500, 50]}}],
            errors=[str(error)],
            raw="box(10,10,500,50)",
            tokens_in=160,
            tokens_out=None,
        )
    )
    trace.add_step(
        Step(index=3, thought="A is left.", raw="<answer>A</answer>", tokens_in=200, tokens_out=5, context=900)
    )
    trace.answer, trace.status = "A", "answered"
    return trace, canvas


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    trace, canvas = solved()
    assert trace.save(tmp_path / "run", canvas) == tmp_path / "run"
    assert trace.views == canvas.provenance()
    loaded = Trace.load(tmp_path / "run")
    assert loaded == trace
    assert loaded.steps[1].errors and loaded.steps[1].tokens_out is None and loaded.steps[2].context == 900
    assert loaded.question.endswith("«é» 🙂") and loaded.status == "answered"
    # UTF-8 on disk, not \u escapes, indented for humans.
    text = (tmp_path / "run" / "trace.json").read_text(encoding="utf-8")
    assert "«é» 🙂" in text and '\n  "question"' in text


def test_every_view_is_a_png_with_the_same_pixels(tmp_path: Path) -> None:
    trace, canvas = solved()
    trace.save(tmp_path, canvas)
    names = sorted(p.name for p in (tmp_path / "views").iterdir())
    assert names == ["001.png", "002.png", "003.png"]
    for view in canvas.views:
        assert np.array_equal(pixels(tmp_path / "views" / f"{view.index:03d}.png"), view.image)


def test_save_is_incremental(tmp_path: Path) -> None:
    trace, canvas = solved()
    trace.save(tmp_path, canvas)
    old = tmp_path / "views" / "002.png"
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))  # a rewrite would reset this to now
    view = canvas.apply("point", {"view": 1, "point": [100, 50]})
    assert isinstance(view, View)
    trace.add_step(Step(index=4, calls=[{"name": "point", "arguments": {"view": 1, "point": [100, 50]}}], view_ids=[4]))
    trace.save(tmp_path, canvas)
    assert old.stat().st_mtime_ns == 1_000_000_000
    assert np.array_equal(pixels(tmp_path / "views" / "004.png"), view.image)
    assert Trace.load(tmp_path).views[-1]["index"] == 4 and Trace.load(tmp_path).steps[-1].view_ids == [4]


def test_saving_leaves_no_temporary_files(tmp_path: Path) -> None:
    trace, canvas = solved()
    for _ in range(3):
        trace.save(tmp_path, canvas)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json", "views"]
    assert all(re.fullmatch(r"\d{3}\.png", p.name) for p in (tmp_path / "views").iterdir())


def test_save_without_a_canvas_keeps_the_recorded_views(tmp_path: Path) -> None:
    trace, canvas = solved()
    trace.save(tmp_path, canvas)
    trace.status = "no_answer"
    trace.save(tmp_path)
    loaded = Trace.load(tmp_path)
    assert loaded.status == "no_answer" and loaded.views == canvas.provenance()


def test_a_killed_run_leaves_a_readable_trace(tmp_path: Path) -> None:
    # Real processes saving after every step, killed with SIGKILL mid-run: no mocks, no cooperation.
    # Large thoughts make each trace.json write long, so the kills often land inside one.
    script = """
import itertools, sys
from sketchmind import Canvas
from sketchmind.trace import Step, Trace
canvas = Canvas(None, whiteboard_size=(400, 300))
trace = Trace(question="q", protocol="p", model="m")
for i in itertools.count(1):
    view = canvas.apply("point", {"point": [i % 400, (7 * i) % 300]})
    trace.add_step(Step(index=i, thought="t" * 100_000, view_ids=[view.index]))
    trace.save(sys.argv[1], canvas)
"""
    runs = [(tmp_path / f"run{k}", 0.02 + 0.05 * k) for k in range(4)]
    processes = [subprocess.Popen([sys.executable, "-c", script, str(run)]) for run, _ in runs]
    try:
        for process, (run, delay) in zip(processes, runs, strict=True):
            deadline = time.monotonic() + 30
            while not (run / "views" / "010.png").exists():
                assert process.poll() is None and time.monotonic() < deadline, "the saving process did not get going"
                time.sleep(0.005)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    for run, _ in runs:
        trace = Trace.load(run)
        assert len(trace.steps) >= 8 and trace.n_images == len(trace.steps) + 1, [
            (s.index, s.view_ids) for s in trace.steps
        ]
        for record in trace.views:  # every view the JSON names has a complete PNG
            assert pixels(run / "views" / f"{record['index']:03d}.png").shape == (300, 400, 3)


def test_missing_or_corrupt_traces_raise_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such directory"):
        Trace.load(tmp_path / "nowhere")
    with pytest.raises(TraceError, match=r"no trace\.json \(not a trace directory\)"):
        Trace.load(tmp_path)
    trace, canvas = solved()
    trace.save(tmp_path, canvas)
    path = tmp_path / "trace.json"
    good = path.read_text(encoding="utf-8")
    path.write_text(good[: len(good) // 2], encoding="utf-8")  # what a non-atomic writer leaves behind
    with pytest.raises(TraceError) as caught:
        Trace.load(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)) and re.search(r"not valid JSON \(line \d+\)", message)
    assert isinstance(caught.value, ValueError)

    for broken, expected in [
        ("[1, 2]", "the top level must be dict"),
        (good.replace('"answered"', '"finished"'), "status 'finished' is not one of"),
        (good.replace('"model": "test-model"', '"model": 7'), "model must be str, got int"),
        (good.replace('"tokens_in": 120', '"tokens_in": "many"'), r"steps\[0\]\.tokens_in must be a number"),
        (good.replace('"question"', '"query"'), "missing field 'question'"),
    ]:
        path.write_text(broken, encoding="utf-8")
        with pytest.raises(TraceError, match=expected) as caught:
            Trace.load(tmp_path)
        assert "\n" not in str(caught.value)


def test_helpers() -> None:
    trace, _ = solved()
    assert trace.total_tokens == 120 + 30 + 160 + 200 + 5
    assert trace.n_images == 0  # views are recorded when a canvas is saved
    step = trace.add_step(Step(index=4))
    assert trace.steps[-1] is step
    assert set(STATUSES) == {"running", "answered", "no_answer", "error"}
    assert Trace(question="q", protocol="p", model="m").status == "running"


def test_viewer_writes_one_self_contained_escaped_page(tmp_path: Path) -> None:
    trace, canvas = solved()
    trace.error = f"late failure {XSS}"
    trace.save(tmp_path, canvas)
    page = write_html(tmp_path)
    assert page == tmp_path / "trace.html"
    html = page.read_text(encoding="utf-8")
    for png in sorted((tmp_path / "views").glob("*.png")):
        assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii") in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS not in html and "<think>" not in html
    assert "http://" not in html and "https://" not in html
    assert "«é» 🙂" in html and "Which box is left?" in html
    assert 'id="prev"' in html and 'id="next"' in html and "ArrowLeft" in html and "ArrowRight" in html
    assert html.count('<section class="step"') == 3 and html.count('href="#step-') == 3
    # Exactly one script, the page's own, and the CSP hash allows it (else browsers would block navigation).
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1 and html.count("<script") == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html
    # The input (view 1) comes before the steps.
    first_image = html.index("data:image/png;base64,")
    assert first_image < html.index('<section class="step"')


def test_viewer_custom_output_and_unsaved_images(tmp_path: Path) -> None:
    trace, _ = solved()
    trace.save(tmp_path / "run")  # no canvas: steps name views that have no PNG
    out = write_html(tmp_path / "run", tmp_path / "elsewhere.html")
    assert out == tmp_path / "elsewhere.html" and not (tmp_path / "run" / "trace.html").exists()
    html = out.read_text(encoding="utf-8")
    assert "002.png was not saved" in html and "data:image/png" not in html
    with pytest.raises(TraceError):
        write_html(tmp_path / "missing")


def test_calls_are_pretty_json_in_the_page(tmp_path: Path) -> None:
    trace, canvas = solved()
    trace.steps[0].calls.append({"name": "text", "arguments": {"text": 'say "hi", <b>x</b>', "nested": [[1, 2], {}]}})
    trace.save(tmp_path, canvas)
    html = write_html(tmp_path).read_text(encoding="utf-8")
    block = re.findall(r"<h3>Tool calls</h3><pre>(.*?)</pre>", html, re.S)[0]
    shown = block.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&#x27;", "'")
    assert json.loads(shown) == trace.steps[0].calls  # valid JSON, same content
    assert '"bbox": [10, 10, 50, 50]' in shown and "\n    " in shown  # indented, short lists on one line
    assert "<b>" not in block
