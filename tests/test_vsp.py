"""The VSP maze loader: every shared example loads, its reference answer verifies, and the expert solves it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MAZE, ROOT
from PIL import Image

from sketchmind.canvas import Canvas, View
from sketchmind.tasks.frozenlake import FrozenLake, Lake, format_plan, simulate, solve
from sketchmind.tasks.frozenlake_render import render
from sketchmind.tasks.vsp import load_vsp, vsp_puzzle_for_image

VSP = ROOT / "data" / "vsp-maze-examples"
FAMILY = FrozenLake()
PUZZLES = load_vsp(VSP)


def test_loads_every_level_in_order() -> None:
    assert [(p.level, p.index) for p in PUZZLES] == [(n, k) for n in range(3, 9) for k in range(8)]
    for puzzle in PUZZLES:
        lake = Lake.from_truth(puzzle.truth)
        assert puzzle.family == "frozenlake" and lake.rows == lake.cols == puzzle.level
        assert puzzle.image is not None and puzzle.image.shape == (64 * puzzle.level, 64 * puzzle.level, 3)
        assert puzzle.meta["style"] == "classic" and puzzle.meta["cell"] == [64.0, 64.0]
        assert Path(puzzle.meta["source"]).is_file()
        assert puzzle.answer.startswith("Action plan: ")
    assert [p.index for p in load_vsp(VSP / "maps", levels=[4, 9])] == list(range(8))


def test_table_matches_pure_text() -> None:
    """The truth read from table/K.txt agrees with VSP's own text rendering of the same map."""
    puzzle = next(p for p in PUZZLES if (p.level, p.index) == (4, 0))
    text = (VSP / "maps" / "level4" / "pure_text" / "0.txt").read_text()
    assert "The player is at: row 4, column 1;" in text and "Row 1, Column 3;" in text
    assert puzzle.truth == {"rows": 4, "cols": 4, "player": [3, 0], "goal": [0, 1], "holes": [[0, 2]]}
    assert puzzle.answer == "Action plan: R,U,U,U"


def test_verify_accepts_every_reference_answer() -> None:
    for puzzle in PUZZLES:
        answer_text = (VSP / "maps" / f"level{puzzle.level}" / "answer" / f"{puzzle.index}.txt").read_text()
        assert FAMILY.verify(puzzle, answer_text), puzzle.id  # the whole verbose reference
        assert FAMILY.verify(puzzle, puzzle.answer), puzzle.id


def test_verify_rejects_holes_short_plans_and_garbage() -> None:
    into_hole = 0
    for puzzle in PUZZLES:
        lake = Lake.from_truth(puzzle.truth)
        plan = solve(lake)
        assert plan is not None
        assert not FAMILY.verify(puzzle, format_plan(plan[:-1]))  # one move short
        assert not FAMILY.verify(puzzle, "Action plan: none")
        for hole in sorted(lake.holes):
            # Walk to a hole while avoiding the goal: the hole becomes the target, the goal a hole.
            decoy = Lake(lake.rows, lake.cols, lake.player, hole, (lake.holes - {hole}) | {lake.goal})
            walk = solve(decoy)
            if walk is not None:
                assert simulate(lake, walk) == "hole"
                assert not FAMILY.verify(puzzle, format_plan([*walk, *plan]))  # no recovering after a fall
                into_hole += 1
                break
    assert into_hole > 30


def test_classic_renderer_reproduces_vsp_images() -> None:
    """Measured: mean absolute difference 0.0 on all 48 images (pixel-identical)."""
    differences = []
    for puzzle in PUZZLES:
        assert puzzle.image is not None
        ours = render(Lake.from_truth(puzzle.truth).desc(), "classic")
        differences.append(np.abs(ours.astype(int) - puzzle.image).mean())
    assert max(differences) <= 0.01


def test_expert_solves_every_example_on_the_real_image() -> None:
    for puzzle in PUZZLES:
        for reflective in (False, True):
            turns = FAMILY.expert(puzzle, reflective=reflective)
            assert FAMILY.verify(puzzle, turns[-1].answer), puzzle.id
            canvas = Canvas(puzzle.image)
            for turn in turns:
                for call in turn.calls:
                    assert isinstance(canvas.apply(call.name, call.arguments), View), (puzzle.id, call)


def test_puzzle_for_image_recognises_the_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    puzzle = vsp_puzzle_for_image(MAZE)
    assert puzzle is not None and puzzle.record() == PUZZLES[8].record()
    monkeypatch.chdir(ROOT)
    relative = vsp_puzzle_for_image(str(MAZE.relative_to(ROOT)))
    assert relative is not None and relative.id == "frozenlake-L4-0"
    other = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(other)
    assert vsp_puzzle_for_image(other) is None
    stray = tmp_path / "level4" / "img" / "0.png"  # the layout's shape, but no table next to it
    stray.parent.mkdir(parents=True)
    shutil.copy(MAZE, stray)
    assert vsp_puzzle_for_image(stray) is None


@pytest.fixture
def level_copy(tmp_path: Path) -> Path:
    """A private copy of level 3 to break."""
    shutil.copytree(VSP / "maps" / "level3", tmp_path / "maps" / "level3")
    return tmp_path / "maps" / "level3"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("table/0.txt", "| | Col 1 | Col 2 |\n| Row 1 | @ | _ |\n| Row 2 | _ | _ |\n"),  # no goal
        ("table/0.txt", "| | Col 1 | Col 2 |\n| Row 1 | @ | x |\n| Row 2 | * | _ |\n"),  # unknown symbol
        ("table/0.txt", "| | Col 1 |\n| Row 1 | @ | * |\n| Row 2 | _ |\n"),  # ragged rows
        ("table/0.txt", "| | Col 1 | Col 2 |\n| Row 1 | @ | * |\n| Row 2 | _ | _ |\n"),  # 2x2 in level3
        ("answer/0.txt", "<Output>\nI do not know.\n"),
        ("img/0.png", "not a png"),
    ],
)
def test_malformed_files_raise_one_line_naming_them(level_copy: Path, name: str, content: str) -> None:
    (level_copy / name).write_text(content)
    with pytest.raises(ValueError) as error:
        load_vsp(level_copy.parent.parent)
    message = str(error.value)
    assert "\n" not in message and message.count(str(level_copy / name)) == 1
    with pytest.raises(ValueError, match="0"):
        vsp_puzzle_for_image(level_copy / "img" / "0.png")


def test_missing_files_and_folders(level_copy: Path, tmp_path: Path) -> None:
    (level_copy / "img" / "1.png").unlink()
    with pytest.raises(ValueError, match=r"img/1\.png"):
        load_vsp(tmp_path)
    with pytest.raises(ValueError, match="no such VSP folder"):
        load_vsp(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no levelN folders"):
        load_vsp(level_copy)


def test_bench_vsp_without_bundled_examples_says_where_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sketchmind import cli
    from sketchmind.tasks import vsp

    monkeypatch.setattr(vsp, "BUNDLED_VSP", tmp_path / "missing")
    code = cli.main(["bench", "vsp", "--model", "expert", "--out", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--data" in lines[0] and vsp.VSP_SOURCE in lines[0]
