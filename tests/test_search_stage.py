"""The search stage: the closed loop that runs a planner as a user would, and the stage at micro scale."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sketchmind.models.base import Conversation, Generation, Policy, Sampling
from sketchmind.tasks import get_family
from sketchmind.tasks.base import Puzzle, make_dataset
from sketchmind.tasks.frozenlake import Lake
from sketchmind.train.pipeline import Pipeline
from sketchmind.train.recipe import SearchSpec, load_recipe
from sketchmind.train.search_rows import draw_turns, search_text
from sketchmind.train.search_stage import measure_solving, solve

ROOT = Path(__file__).resolve().parents[1]
FAMILY = get_family("frozenlake-classic")


class ScriptedPlanner(Policy):
    """Writes the expert's turn for the puzzle and turn its conversation id names; ``slip`` garbles one turn."""

    def __init__(self, puzzles: list[Puzzle], slip: tuple[str, int] | None = None) -> None:
        self.by_id = {p.id: p for p in puzzles}
        self.slip = slip
        self.seen: list[Conversation] = []

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.seen.append(conversation)
        arm, rest = conversation.id.split("-", 1)
        if arm == "text":
            return Generation(search_text(Lake.from_truth(self.by_id[rest].truth)))
        puzzle_id, turn = re.fullmatch(r"(.+)-(\d+)", rest).groups()  # type: ignore[union-attr]
        text = draw_turns(self.by_id[puzzle_id])[int(turn)][1]
        if self.slip == (puzzle_id, int(turn)):
            text = text.replace(text.splitlines()[-1], "1,1 U: 9,9 F")  # a move that does not reach that cell
        return Generation(text)


def test_the_closed_loop_draws_the_models_own_lines_and_the_verifier_judges_the_plan() -> None:
    puzzles = make_dataset(FAMILY, [3, 5, 8], 2, seed=11)
    planner = ScriptedPlanner(puzzles)
    assert all(FAMILY.verify(p, a) for p, a in zip(puzzles, solve(planner, puzzles, "draw"), strict=True))
    # Each turn is a one-message conversation with one view: no history reaches the model.
    assert all(len(c.messages) == 1 and list(c.images) == [0] for c in planner.seen)
    assert len(planner.seen) == sum(len(draw_turns(p)) for p in puzzles)
    first = [c for c in planner.seen if c.id.endswith("-0")]
    assert all(c.images[0] is p.image for c, p in zip(first, puzzles, strict=True))  # the bare map first

    slipped = ScriptedPlanner(puzzles, slip=(puzzles[2].id, 1))
    answers = solve(slipped, puzzles, "draw")
    assert [FAMILY.verify(p, a) for p, a in zip(puzzles, answers, strict=True)] == [True, True, False, True, True, True]
    assert answers[2].endswith("1,1 U: 9,9 F")  # what ended it is kept as the answer

    table = measure_solving(ScriptedPlanner(puzzles), {"generated": puzzles}, "text", FAMILY)
    assert table.rows[-1] == {"set": "generated", "level": "all", "solved": 6, "n": 6}
    assert "| generated | all | 6 | 6 | 1.00 (0.61-1.00) |" in table.markdown()


def test_the_search_stage_opens_sizes_trains_with_guidance_and_solves_in_closed_loop(tmp_path: Path) -> None:
    micro = load_recipe(ROOT / "policies" / "micro.yaml")
    search = SearchSpec(
        levels=[3, 4], max_steps=4, batch_size=2, eval_every=2, eval_n=2, save_steps=2, solve_n=2, widen=0.0
    )
    recipe = micro.model_copy(
        update={
            "output": str(tmp_path / "run"),
            "stages": micro.stages.model_copy(update={"perceive": None, "search": search}),
        }
    )
    lines: list[str] = []
    pipeline = Pipeline(recipe, report=lines.append)
    summary = pipeline.run(only=["synth", "base", "search"])["search"]
    assert "search: level 4 joins" in lines and summary["levels_open"] == 4 and summary["global_step"] == 4
    state = json.loads((tmp_path / "run" / "search" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["SearchCurriculumCallback"]["attributes"] == {"unlocked": 2}
    logged = [json.loads(line) for line in (tmp_path / "run" / "search" / "metrics.jsonl").read_text().splitlines()]
    assert any("look" in m and "token_ce" in m for m in logged)  # both guidance losses ran
    solved = json.loads((tmp_path / "run" / "search" / "solve.json").read_text())
    assert solved["arm"] == "draw"
    assert [(r["set"], r["level"], r["n"]) for r in solved["rows"]] == [
        ("generated", 3, 2),
        ("generated", 4, 2),
        ("generated", "all", 4),
    ]
    assert 0.0 <= summary["generated_solved"] <= 1.0
    assert pipeline.model_after("search") == str(tmp_path / "run" / "search" / "final")
