"""The Gradio demo through its HTTP API (gradio_client), served in-process on a free port.

The expert model plays generated puzzles deterministically, so every run here is fast and exact.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file
from loopback import free_port, served_demo

from sketchmind.demo.limits import DemoInputError
from sketchmind.demo.session import DemoSession
from sketchmind.tasks import get_family, puzzle_rng

# /solve, /accept, /apply_edits and /add_mark return these, in this order.
CHAT, GALLERY, ANSWER, STATUS, TRACE_ZIP, PENDING = range(6)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with served_demo("expert") as address:
        yield address


@pytest.fixture
def client(url: str) -> Client:
    """A fresh visitor (its own session state) for each test."""
    return Client(url, verbose=False)


def titles(chat: list[dict[str, Any]]) -> list[str]:
    return [m["metadata"]["title"] for m in chat if m.get("metadata") and m["metadata"].get("title")]


def read_trace(archive: str) -> tuple[dict[str, Any], list[str]]:
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        trace = json.loads(zipped.read(next(n for n in names if n.endswith("/trace.json"))))
    return trace, names


def generate_maze(client: Client) -> tuple[str, str]:
    image, question, status = client.predict("maze", 1, 0, api_name="/generate")
    assert "maze-L1-0" in status
    return image, question


def test_generate_and_solve_with_the_expert(client: Client) -> None:
    puzzle = get_family("maze").generate(puzzle_rng("maze", 0, 1, 0), 1, 0)
    image, question = generate_maze(client)
    assert question == puzzle.question

    out = client.predict(handle_file(image), question, "expert", "draw", False, api_name="/solve")

    assert out[ANSWER] == puzzle.answer
    assert out[STATUS].startswith("✔")
    calls = [t for t in titles(out[CHAT]) if t.startswith("✏")]
    assert "✏ box 'start'" in calls and len(calls) >= 3
    views = [part for m in out[CHAT] for part in m["content"] if part.get("component") == "image"]
    assert len(views) >= 2  # every drawn view is shown inline
    assert len(out[GALLERY]) >= 2 and all(Path(item["image"]).is_file() for item in out[GALLERY])
    assert out[PENDING] == ""
    trace, names = read_trace(out[TRACE_ZIP])
    assert trace["answer"] == puzzle.answer and trace["meta"]["correct"] is True
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == len(trace["views"]) >= 2
    assert Path(out[TRACE_ZIP]).name == "sketchmind-trace-maze-L1-0-seed0-draw.zip"  # says what it holds


def test_each_view_has_its_caption_above_it_not_over_it(client: Client) -> None:
    image, question = generate_maze(client)
    out = client.predict(handle_file(image), question, "expert", "draw", False, api_name="/solve")
    shown = [m["content"] for m in out[CHAT] if any(part.get("component") == "image" for part in m["content"])]
    assert len(shown) >= 2
    for caption, picture in shown:  # the caption is a line of text before the view...
        assert caption["type"] == "text" and caption["text"].startswith("view ") and "(312x312)" in caption["text"]
        assert not picture["props"].get("label")  # ...and not the image's label, which the chat draws over it


def test_bad_uploads_give_one_line(client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)

    image, status = client.predict(handle_file(str(corrupt)), api_name="/check_image")
    assert image is None and status.startswith("⚠ broken.png: ") and "corrupt" in status and "\n" not in status

    out = client.predict(handle_file(str(corrupt)), "What is this?", "expert", "draw", False, api_name="/solve")
    assert out[STATUS].startswith("⚠ broken.png: ") and "corrupt" in out[STATUS] and "\n" not in out[STATUS]
    assert out[ANSWER] == "" and out[TRACE_ZIP] is None

    puzzle_image, question = generate_maze(client)
    monkeypatch.setenv("SKETCHMIND_MAX_PIXELS", "10000")  # the 312x312 maze is now too big
    _, status = client.predict(handle_file(puzzle_image), api_name="/check_image")
    assert "over the limit" in status and "\n" not in status
    monkeypatch.delenv("SKETCHMIND_MAX_PIXELS")

    for args, expected in [
        ((question * 100, "expert", "draw"), "limit is"),  # too long a question
        (("  ", "expert", "draw"), "Type a question"),
        ((question, "/no/such/checkpoint", "draw"), "Could not load model"),
        ((question, "expert", "latent"), "latent"),  # the expert cannot imagine
    ]:
        out = client.predict(handle_file(puzzle_image), *args, False, api_name="/solve")
        assert expected in out[STATUS] and "\n" not in out[STATUS] and "Traceback" not in out[STATUS]


def test_step_by_step_edit_and_add_a_mark(client: Client) -> None:
    image, question = generate_maze(client)
    out = client.predict(handle_file(image), question, "expert", "draw", True, api_name="/solve")
    assert out[STATUS].startswith("❚❚") and out[ANSWER] == ""
    pending = json.loads(out[PENDING])
    assert [c["arguments"]["label"] for c in pending] == ["start", "goal"]

    # A malformed edit is refused with one line; the run stays paused (the next edit goes through).
    out = client.predict("[{", api_name="/apply_edits")
    assert "not valid JSON" in out[STATUS] and "\n" not in out[STATUS]

    pending[0]["arguments"]["bbox"] = [20, 20, 100, 100]  # move the model's first box
    out = client.predict(json.dumps(pending), api_name="/apply_edits")
    assert out[STATUS].startswith("❚❚")  # paused again before the next turn's drawing

    out = client.predict("box", "120, 200, 180, 290", "mine", out[PENDING], api_name="/add_mark")
    assert out[STATUS].startswith("❚❚")
    assert "✍ box 'start' (yours)" in titles(out[CHAT]) and "✍ box 'mine' (yours)" in titles(out[CHAT])

    out = client.predict("box", "1, 2, 3", "mine", out[PENDING], api_name="/add_mark")
    assert "4 numbers" in out[STATUS]

    for _ in range(10):
        if not out[PENDING]:
            break
        out = client.predict(api_name="/accept")
    assert out[ANSWER] == "2" and out[STATUS].startswith("✔")

    trace, _ = read_trace(out[TRACE_ZIP])
    first, second = trace["steps"][0]["calls"], trace["steps"][1]["calls"]
    assert first[0]["arguments"]["bbox"] == [20, 20, 100, 100]
    assert second[-1]["name"] == "box" and second[-1]["arguments"] == {"bbox": [120, 200, 180, 290], "label": "mine"}
    drawn = [a for view in trace["views"] for a in view["actions"]]
    assert {"name": "box", "arguments": {"bbox": [120, 200, 180, 290], "label": "mine"}} in drawn

    out = client.predict(api_name="/accept")  # the run is over: nothing waits
    assert "Nothing is waiting" in out[STATUS]


def photo(tmp_path: Path, name: str = "holiday photo.png") -> str:
    """An uploaded image that is not a generated puzzle."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(pixels, "RGB").save(path)
    return str(path)


def test_an_upload_with_the_shipped_policy_says_it_is_a_grid_puzzle_specialist(client: Client, tmp_path: Path) -> None:
    upload = handle_file(photo(tmp_path))
    note = client.predict(upload, "default", api_name="/model_note")
    assert "grid-puzzle specialist" in note
    assert "checkpoint" in note and "openai:NAME" in note and "OPENAI_BASE_URL" in note  # how to use a general VLM
    assert "grid-puzzle specialist" in client.predict(upload, "sketchmind-tiny", api_name="/model_note")
    assert "only plays generated puzzles" in client.predict(upload, "expert", api_name="/model_note")
    assert client.predict(upload, "openai:some-vlm", api_name="/model_note") == ""  # a general model: no note

    image, _ = generate_maze(client)  # the shipped policy's own kind of image: no note
    assert client.predict(handle_file(image), "default", api_name="/model_note") == ""


def test_a_run_on_an_upload_with_the_shipped_policy_carries_the_note(tmp_path: Path) -> None:
    """The note stays in the chat of the run, right after the question. Through the demo's session and chat
    rendering: a recorded policy stands in for the shipped weights (which take minutes per run on a CPU);
    the note goes by the model the visitor picked."""
    from sketchmind.demo.chat import chat_messages
    from sketchmind.demo.limits import read_upload
    from sketchmind.models.replay import ReplayPolicy

    def solved(pixels: Any, model: str) -> list[dict[str, Any]]:
        policy = ReplayPolicy(["<answer>2</answer>"])
        run = session.new_run(policy, model=model, mode="draw", question="What?", pixels=pixels, step_by_step=False)
        for _ in run.start(pixels):
            pass
        assert run.trace is not None and run.trace.answer == "2"
        return chat_messages(run)

    def notes(chat: list[dict[str, Any]]) -> list[int]:
        return [k for k, m in enumerate(chat) if (m.get("metadata") or {}).get("title") == "ⓘ About this model"]

    session = DemoSession()
    try:
        upload = read_upload(photo(tmp_path))
        chat = solved(upload, "default")
        assert notes(chat) == [1] and "grid-puzzle specialist" in chat[1]["content"]
        assert notes(solved(upload, "sketchmind-tiny")) == [1]
        assert notes(solved(upload, "openai:some-vlm")) == []  # a general model: no note
        made = session.generate("maze", 1, 0)
        assert notes(solved(made.puzzle.image, "default")) == []  # a grid puzzle: what it was trained on
    finally:
        session.close()


def test_a_refused_solve_keeps_the_previous_run(client: Client, tmp_path: Path) -> None:
    image, question = generate_maze(client)
    done = client.predict(handle_file(image), question, "expert", "draw", False, api_name="/solve")
    assert done[ANSWER] == "2"
    for args, reason in [
        ((handle_file(image), question, "expert", "latent"), "latent"),  # a mode the model lacks
        ((handle_file(image), question, "/no/such/checkpoint", "draw"), "Could not load model"),
        ((handle_file(photo(tmp_path)), "What is this?", "expert", "draw"), "only plays generated puzzles"),
        ((handle_file(image), " ", "expert", "draw"), "Type a question"),
    ]:
        out = client.predict(*args, False, api_name="/solve")
        assert reason in out[STATUS] and out[STATUS].startswith("⚠")
        assert out[CHAT] == done[CHAT] and out[ANSWER] == "2" and len(out[GALLERY]) == len(done[GALLERY])
        assert out[TRACE_ZIP] is not None and Path(out[TRACE_ZIP]).name == Path(done[TRACE_ZIP]).name


def test_an_uploaded_image_names_its_trace_download() -> None:
    from sketchmind.demo.session import archive_name

    assert archive_name(None, "/tmp/gradio/x/holiday photo.png", "draw") == "sketchmind-trace-holiday-photo-draw.zip"
    assert archive_name(None, "../../..", "text") == "sketchmind-trace-upload-text.zip"


@pytest.mark.parametrize(
    ("family", "level", "seed", "message"),
    [
        ("maze", 9, 0, "maze has levels 1-5, not 9"),
        ("sudoku", 1, 0, "unknown task family 'sudoku'"),
        ("maze", 1, -1, "The seed must be between"),
        ("maze", 1.5, 0, "whole numbers"),
    ],
)
def test_generate_refuses_bad_settings_in_one_line(family: str, level: float, seed: int, message: str) -> None:
    session = DemoSession()
    try:
        with pytest.raises(DemoInputError, match=message) as caught:
            session.generate(family, level, seed)
        assert "\n" not in str(caught.value)
    finally:
        session.close()


@pytest.mark.parametrize("command", [["-m", "sketchmind.cli", "demo"], ["app.py"]], ids=["sketchmind-demo", "app.py"])
def test_the_demo_serves_on_the_port_and_model_it_is_given(command: list[str]) -> None:
    """``sketchmind demo`` and ``python app.py`` take the same flags: the page is on --port, --model is selected."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    flags = ["--port", str(port), "--model", "expert"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen(
        [sys.executable, *command, *flags], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline, config = time.monotonic() + 240, None  # slow on a busy machine
        while time.monotonic() < deadline and config is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    config = json.loads(response.read())
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
                time.sleep(0.5)
        assert config is not None, f"nothing served on --port {port}"
        models = [c["props"] for c in config["components"] if c.get("props", {}).get("label") == "Model"]
        assert [m["value"] for m in models] == ["expert"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_app_py_takes_the_flags_of_sketchmind_demo() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, timeout=120)

    app, cli = run("app.py", "--help"), run("-m", "sketchmind.cli", "demo", "--help")
    assert app.returncode == cli.returncode == 0
    assert app.stdout == cli.stdout and "--port" in app.stdout and "--share" in app.stdout
    bad = run("app.py", "--port", "nope")
    assert bad.returncode == 2 and "--port" in bad.stderr and "Traceback" not in bad.stderr
