"""The results tables a trained recipe publishes: read from the eval runs on disk, written between markers."""

from __future__ import annotations

import json
from pathlib import Path

from sketchmind.train.recipe import Recipe
from sketchmind.train.results import main, render, write_block


def _recipe(out: Path) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "sketchmind-test",
            "output": str(out),
            "model": {"base": "m"},
            "eval": {"families": ["maze"], "modes": ["draw", "text"], "n": 2, "vsp": "data/vsp-maze-examples"},
        }
    )


def _write(out: Path, target: str, mode: str, verdicts: list[tuple[int, bool, int]]) -> None:
    run = out / "eval" / f"{target}-{mode}"
    run.mkdir(parents=True)
    lines = [
        {"id": f"{target}-{i}", "level": level, "correct": ok, "turns": 2, "images": 3, "context": context}
        | {"seconds": 0.5}
        for i, (level, ok, context) in enumerate(verdicts)
    ]
    (run / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_tables_give_accuracy_intervals_context_and_levels(tmp_path: Path) -> None:
    _write(tmp_path, "maze", "draw", [(1, True, 900), (1, True, 1100), (2, False, 1000), (2, True, 1000)])
    _write(tmp_path, "maze", "text", [(1, False, 300), (1, True, 300), (2, False, 300), (2, False, 300)])
    _write(tmp_path, "vsp", "draw", [(3, True, 700)])
    for stage, done in (("synth", {"rows": 12, "seconds": 90}), ("sft", {"global_step": 40, "seconds": 150})):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "done.json").write_text(json.dumps(done))
    text = render(_recipe(tmp_path))
    assert "| synth | 1.5 min | 12 rows |" in text and "| sft | 2.5 min | 40 steps |" in text
    assert "| **total** | **4 min** | |" in text
    assert "| maze | draw | 4 | 75% (30%-95%) | 1000 | 2.0 | 0.50 |" in text
    assert "| maze | text CoT | 4 | 25% (5%-70%) | 300 | 2.0 | 0.50 |" in text
    assert "| VSP maze examples | draw | 1 | 100% (21%-100%) | 700 |" in text
    assert "| maze | 2 | 2 | 50% (9%-91%) | 0% (0%-66%) |" in text  # per level, one column per mode
    assert "| VSP maze examples | 3 | 1 | 100% (21%-100%) | - |" in text  # text mode never ran on VSP

    # a policy with no tools (its bench folder says it spoke `search`) runs text mode as its search in words
    (tmp_path / "eval" / "maze-text" / "run.json").write_text(json.dumps({"protocol": "search"}))
    text = render(_recipe(tmp_path))
    assert "| maze | search in words | 4 | 25% (5%-70%) |" in text and "text CoT" not in text


def test_the_block_between_markers_is_replaced_and_a_missing_block_is_an_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- results:x -->\nold\n<!-- /results:x -->\nafter\n")
    assert write_block(page, "x", "| new |")
    assert page.read_text() == "intro\n<!-- results:x -->\n| new |\n<!-- /results:x -->\nafter\n"
    assert not write_block(page, "y", "| new |")

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\noutput: {tmp_path / 'run'}\nmodel: {{base: m}}\neval: {{families: [maze]}}\n")
    assert main([str(recipe)]) == 2  # nothing evaluated yet: one line, no traceback
    assert "no eval results" in capsys.readouterr().err
    _write(tmp_path / "run", "maze", "draw", [(1, True, 10)])
    assert main([str(recipe), "--write", str(page)]) == 0
    assert "| maze | draw | 1 | 100%" in page.read_text() and "old" not in page.read_text()


def test_each_page_gets_the_blocks_it_holds_and_a_page_with_none_fails_before_any_write(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\noutput: {tmp_path / 'run'}\nmodel: {{base: m}}\neval: {{families: [maze]}}\n")
    _write(tmp_path / "run", "maze", "draw", [(1, True, 10)])
    results = tmp_path / "results.md"
    results.write_text("<!-- results:x -->\nold\n<!-- /results:x -->\n")
    reading = tmp_path / "perception.md"  # no perceive stage ran: its block is left as it is
    reading.write_text("<!-- perception:x -->\n(not yet measured)\n<!-- /perception:x -->\n")
    neither = tmp_path / "other.md"
    neither.write_text("no blocks here\n")

    assert main([str(recipe), "--write", str(results), str(reading), str(neither)]) == 2
    assert "other.md has no <!-- results:x -->" in capsys.readouterr().err
    assert "old" in results.read_text()  # nothing written when one page is wrong
    assert main([str(recipe), "--write", str(results), str(reading)]) == 0
    assert "| maze | draw | 1 | 100%" in results.read_text()
    assert reading.read_text() == "<!-- perception:x -->\n(not yet measured)\n<!-- /perception:x -->\n"


def test_the_reading_block_says_whether_the_perceive_stage_finished(tmp_path: Path) -> None:
    from sketchmind.train.perception import READING_FILE, ReadingTable
    from sketchmind.train.results import perception_block

    recipe = Recipe.model_validate(
        {"name": "x", "output": str(tmp_path), "model": {"base": "m"}, "stages": {"perceive": {"max_steps": 900}}}
    )
    assert perception_block(recipe) is None  # the stage never ran
    stage = tmp_path / "perceive"
    (stage / "checkpoint-300").mkdir(parents=True)
    (stage / "checkpoint-200").mkdir()
    row = {"set": "generated", "level": "all", "n": 4, "cell": 0.9, "exact": 0.5, "player": 1.0, "goal": 0.75}
    ReadingTable([row]).save(stage / READING_FILE)
    block = perception_block(recipe)
    assert block is not None and "not reached: the stage has not finished (last checkpoint: step 300 of 900)" in block
    assert "| generated | all | 4 | 0.900 | 0.50" in block
    (stage / "done.json").write_text(json.dumps({"gate_passed_at": 250}))
    assert "passed at step 250" in (perception_block(recipe) or "")
    (stage / "done.json").write_text(json.dumps({}))
    assert "not passed within max_steps" in (perception_block(recipe) or "")
