"""The performance suite's plumbing: its table, and the docs blocks it rewrites (no timings here)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from sketchmind.files import replace_marked_block

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench  # noqa: E402

# Every generated block, the docs page that holds it, and the make target that rewrites it there.
BLOCKS = {
    bench.BLOCK: (bench.PAGE, "bench"),
    "bench:fuzz": ("docs/reliability.md", "fuzz"),
    "bench:load": ("docs/reliability.md", "load"),
    "results:sketchmind-tiny": ("docs/results.md", "results"),
    "perception:sketchmind-tiny": ("docs/perception.md", "results"),
}


def test_the_docs_pages_have_the_blocks_the_tools_rewrite_and_the_readme_has_none() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for name, (page, target) in BLOCKS.items():
        text = (ROOT / page).read_text(encoding="utf-8")
        assert text.count(f"<!-- {name} -->") == 1 and text.count(f"<!-- /{name} -->") == 1, (name, page)
        assert f"<!-- {name} -->" not in readme
        recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        for variable, default in re.findall(r"^(\w+) \?= (.*)$", makefile, re.M):  # `LOAD_WRITE ?= --write ...`
            recipe = recipe.replace(f"$({variable})", default)
        assert page in recipe and "README.md --" not in recipe and "--write README.md" not in recipe, target


def test_replace_marked_block_keeps_the_prose_around_it(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- x -->\nold table\n<!-- /x -->\noutro\n", encoding="utf-8")
    assert replace_marked_block(readme, "x", "| a |\n")
    assert readme.read_text(encoding="utf-8") == "intro\n<!-- x -->\n| a |\n<!-- /x -->\noutro\n"
    assert not replace_marked_block(readme, "y", "| b |")
    assert readme.read_text(encoding="utf-8").count("| a |") == 1  # untouched


def test_rows_render_with_their_verdicts() -> None:
    rows = [
        bench.Ratio("canvas", "render vs memcpy", "0.6 vs 0.2 ms", "2.6x", "<= 5x", True),
        bench.Ratio("backend", "KV reuse", "251 vs 486 ms", "1.9x", ">= 3x", False),
        bench.Ratio("backend", "… first token", "52 vs 304 ms", "5.8x", "", None),
    ]
    lines = bench.markdown(rows).splitlines()
    assert lines[0] == "| " + " | ".join(bench.COLUMNS) + " |"
    assert [line.rsplit("|", 2)[1].strip() for line in lines[2:]] == ["PASS", "FAIL", ""]


def test_unknown_parts_are_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--only", "canvas,warp"])
    assert exit_info.value.code == 2 and "unknown part warp" in capsys.readouterr().err
