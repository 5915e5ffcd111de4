"""The command line: exit codes, one-line errors, and the `make run` path end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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
