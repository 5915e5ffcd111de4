"""The command line: exit codes, one-line errors, and the `make run` path end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import free_port
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MAZE = ROOT / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"
CALLS = ROOT / "examples" / "maze_calls.json"


def sketchmind(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sketchmind", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_draw_saves_a_trace_and_show_writes_html(tmp_path: Path) -> None:
    result = sketchmind("draw", MAZE, CALLS, "--save", tmp_path / "run", "--question", "maze?")
    assert result.returncode == 0, result.stderr
    assert "answer Action plan: R,U,U,U" in result.stdout
    trace = json.loads((tmp_path / "run" / "trace.json").read_text())
    assert trace["answer"] == "Action plan: R,U,U,U" and trace["status"] == "answered"
    assert trace["steps"][2]["thought"].startswith("Column 2 has no holes")
    assert trace["steps"][2]["calls"][0]["name"] == "path" and set(trace["steps"][2]["calls"][0]) == {
        "name",
        "arguments",
    }
    pngs = sorted((tmp_path / "run" / "views").glob("*.png"))
    assert len(pngs) == 5  # the input and four drawings
    assert Image.open(pngs[0]).size == (256, 256)
    shown = sketchmind("show", tmp_path / "run")
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "run" / "trace.html").stat().st_size > 10_000


def test_failed_calls_exit_1_and_still_save(tmp_path: Path) -> None:
    calls = json.dumps(
        [{"name": "box", "arguments": {"bbox": [0, 0, 999, 10]}}, {"name": "point", "arguments": {"point": [5, 5]}}]
    )
    result = sketchmind("draw", MAZE, calls, "--save", tmp_path / "run")
    assert result.returncode == 1
    assert "x=999 is outside view 1 (256x256)" in result.stdout
    assert len(list((tmp_path / "run" / "views").glob("*.png"))) == 2


def test_blank_whiteboard() -> None:
    result = sketchmind("draw", "--blank", '{"name": "line", "arguments": {"start": [0, 0], "end": [100, 100]}}')
    assert result.returncode == 0, result.stderr
    assert "view 2: line on view 1 (1024x1024)" in result.stdout


@pytest.mark.parametrize(
    ("make_input", "fragment"),
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: (d / "text.png").write_text("hello") and d / "text.png", "not an image file"),
        (lambda d: (d / "cut.png").write_bytes(MAZE.read_bytes()[:300]) and d / "cut.png", "truncated or corrupt"),
    ],
)
def test_bad_images_exit_2_with_one_line(tmp_path: Path, make_input, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(sketchmind("draw", make_input(tmp_path), CALLS), fragment)


def test_bad_calls_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(sketchmind("draw", MAZE, "[{oops"), "not valid JSON")
    assert_one_line_error(sketchmind("draw", MAZE, tmp_path / "nope.json"), "no such calls file")
    assert_one_line_error(sketchmind("draw", MAZE, "[1, 2]"), "expected a list of")
    assert_one_line_error(sketchmind("draw", CALLS), "give an IMAGE")


def test_show_on_a_missing_trace_exits_2(tmp_path: Path) -> None:
    result = sketchmind("show", tmp_path / "nothing")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tools_prints_specs() -> None:
    result = sketchmind("tools", "box", "zoom")
    assert result.returncode == 0
    names = [spec["function"]["name"] for spec in json.loads(result.stdout)]
    assert names == ["box", "zoom"]


def _recorded(tmp_path: Path, outputs: list[str]) -> Path:
    """A saved trace whose raw outputs `replay:` feeds back to the agent."""
    from sketchmind.trace import Step, Trace

    trace = Trace("q", "sketchmind", "recorded", steps=[Step(i + 1, raw=o) for i, o in enumerate(outputs)])
    return trace.save(tmp_path / "recorded")


EXPERT = [
    '<think>Box the goal.</think><tool_call>{"name": "box", "arguments": {"bbox": [64, 0, 128, 64], "label": "goal"}}'
    "</tool_call>",
    "<think>Up column 2.</think><answer>Action plan: R,U,U,U</answer>",
]


def test_solve_answers_with_exit_0_and_the_answer_last(tmp_path: Path) -> None:
    model = f"replay:{_recorded(tmp_path, EXPERT)}"
    result = sketchmind("solve", MAZE, "Find a path.", "--model", model, "--save", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "Action plan: R,U,U,U"
    assert any(line.startswith("call  box") for line in lines) and any(line == "view  2" for line in lines)
    assert json.loads((tmp_path / "run" / "trace.json").read_text())["status"] == "answered"


def test_solve_samples_saves_the_views_its_trace_names(tmp_path: Path) -> None:
    from sketchmind.cli import main
    from sketchmind.trace import Trace, view_filename

    model = f"replay:{_recorded(tmp_path, EXPERT)}"
    code = main(
        ["solve", str(MAZE), "Find a path.", "--model", model, "--samples", "3", "--save", str(tmp_path / "run")]
    )
    assert code == 0
    trace = Trace.load(tmp_path / "run")
    assert trace.meta["samples"] == ["Action plan: R,U,U,U"] * 3 and len(trace.views) == 2
    for view in trace.views:
        assert (tmp_path / "run" / "views" / view_filename(view["index"])).is_file(), view


def test_solve_json_prints_the_trace(tmp_path: Path) -> None:
    model = f"replay:{_recorded(tmp_path, EXPERT)}"
    result = sketchmind("solve", MAZE, "Find a path.", "--model", model, "--json")
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    assert trace["answer"] == "Action plan: R,U,U,U" and trace["steps"][0]["view_ids"] == [2]


def test_solve_without_answer_exits_1_and_keeps_the_trace(tmp_path: Path) -> None:
    model = f"replay:{_recorded(tmp_path, ['no tags here'] * 3)}"
    result = sketchmind("solve", MAZE, "q", "--model", model, "--max-turns", "3", "--save", tmp_path / "run")
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("no answer (turn budget spent")
    assert len(json.loads((tmp_path / "run" / "trace.json").read_text())["steps"]) == 3


def test_solve_backend_failure_exits_3(tmp_path: Path) -> None:
    model = f"replay:{_recorded(tmp_path, EXPERT[:1])}"  # the recording ends before an answer
    result = sketchmind("solve", MAZE, "q", "--model", model)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr and "backend error: replay has only 1 recorded turns" in result.stderr


def test_solve_usage_errors_exit_2(tmp_path: Path) -> None:
    model = f"replay:{_recorded(tmp_path, EXPERT)}"
    assert_one_line_error(sketchmind("solve", tmp_path / "nope.png", "q", "--model", model), "no such file")
    assert_one_line_error(sketchmind("solve", "q", "--model", model), "give an IMAGE")
    assert_one_line_error(sketchmind("solve", MAZE, "q", "--model", model, "--mode", "latent"), "latent-token policy")
    assert_one_line_error(sketchmind("solve", MAZE, "q", "--model", "replay:/nonexistent"), "no such directory")


def test_solve_against_an_unreachable_server_exits_3_with_one_line() -> None:
    result = sketchmind(
        "solve",
        MAZE,
        "q",
        "--model",
        "openai:tiny",
        "--base-url",
        f"http://127.0.0.1:{free_port()}/v1",
        "--timeout",
        "5",
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach http://127.0.0.1:" in lines[0]


def test_sketchmind_debug_shows_a_backend_errors_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("SKETCHMIND_DEBUG", "1")
    result = sketchmind("solve", MAZE, "q", "--model", "openai:tiny", "--base-url", url, "--timeout", "5")
    assert result.returncode == 3
    assert "cannot reach http://127.0.0.1:" in result.stderr.splitlines()[-1]  # the one line still comes last
    assert "APIConnectionError" in result.stderr and "direct cause" in result.stderr


def test_serve_a_tiny_checkpoint_and_solve_through_it(tmp_path: Path) -> None:
    """`sketchmind serve` in a real process, `sketchmind solve --model openai:...` against it over loopback."""
    import os
    import time
    import urllib.request

    from sketchmind.models.tiny import build_tiny

    checkpoint = build_tiny("qwen2.5-vl", tmp_path / "tiny")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sketchmind",
            "serve",
            "--model",
            str(checkpoint),
            "--name",
            "tiny",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(600):  # wait until it accepts (model load), at most ~60 s
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as response:
                    assert json.load(response)["data"][0]["id"] == "tiny"
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                time.sleep(0.1)
        result = sketchmind(
            "solve", MAZE, "Find a path.", "--model", "openai:tiny", "--base-url", f"http://127.0.0.1:{port}/v1",
            "--max-turns", "2", "--max-new-tokens", "8", "--json",
        )  # fmt: skip
        # A random tiny model never answers: exit 1, and the trace shows two real model turns.
        assert result.returncode == 1, result.stderr
        trace = json.loads(result.stdout)
        assert trace["status"] == "no_answer" and len(trace["steps"]) == 2
        assert all(step["tokens_out"] for step in trace["steps"])
    finally:
        server.terminate()
        server.wait(timeout=30)
