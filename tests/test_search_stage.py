"""The search stage: the closed loop that runs a planner as a user would, and the stage at micro scale."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sketchmind.models.base import Conversation, Generation, Policy, Sampling
from sketchmind.tasks import get_family
from sketchmind.tasks.base import Puzzle, make_dataset
from sketchmind.tasks.frozenlake import MOVES, Lake
from sketchmind.tasks.frozenlake_search import cell_name, search, search_view, states
from sketchmind.train.pipeline import Pipeline
from sketchmind.train.recipe import SearchSpec, load_recipe
from sketchmind.train.search_rows import draw_turns, search_text
from sketchmind.train.search_stage import measure_solving, solve

ROOT = Path(__file__).resolve().parents[1]
FAMILY = get_family("frozenlake-classic")


class ScriptedPlanner(Policy):
    """Writes the expert's turn for the puzzle and turn its conversation id names, or ``says[(id, turn)]``.

    It also checks what it is shown: each draw turn's only image must be the view of the state the lines so
    far lead to (``seen_wrong`` counts the turns whose view was not).
    """

    def __init__(self, puzzles: list[Puzzle], says: dict[tuple[str, int], str] | None = None) -> None:
        self.by_id = {p.id: p for p in puzzles}
        self.says = says or {}
        self.seen: list[Conversation] = []
        self.seen_wrong = 0

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.seen.append(conversation)
        arm, rest = conversation.id.split("-", 1)
        if arm == "text":
            return Generation(search_text(Lake.from_truth(self.by_id[rest].truth)))
        puzzle_id, turn = re.fullmatch(r"(.+)-(\d+)", rest).groups()  # type: ignore[union-attr]
        puzzle = self.by_id[puzzle_id]
        state, text = draw_turns(puzzle)[int(turn)]
        self.seen_wrong += not np.array_equal(conversation.images[0], search_view(puzzle, state))
        return Generation(self.says.get((puzzle_id, int(turn)), text))


def test_the_closed_loop_draws_the_models_own_lines_and_the_verifier_judges_the_plan() -> None:
    puzzles = make_dataset(FAMILY, [3, 5, 8], 2, seed=11)
    planner = ScriptedPlanner(puzzles)
    assert all(FAMILY.verify(p, a) for p, a in zip(puzzles, solve(planner, puzzles, "draw"), strict=True))
    # Each turn is a one-message conversation with one view, the state its lines lead to: no history.
    assert all(len(c.messages) == 1 and list(c.images) == [0] for c in planner.seen) and planner.seen_wrong == 0
    assert len(planner.seen) == sum(len(draw_turns(p)) for p in puzzles)

    table = measure_solving(ScriptedPlanner(puzzles), {"generated": puzzles}, "text", FAMILY)
    assert table.rows[-1] == {"set": "generated", "level": "all", "solved": 6, "n": 6}
    assert "| generated | all | 6 | 6 | 1.00 (0.61-1.00) |" in table.markdown()


def _try_line(cell: tuple[int, int], move: str) -> str:
    """A tried move written as the search writes it, whatever cell it reaches."""
    dr, dc = MOVES[move]
    return f"{cell_name(cell)} {move}: {cell_name((cell[0] + dr, cell[1] + dc))} F"


def test_a_line_that_does_not_follow_ends_that_run_and_is_its_answer() -> None:
    pool = make_dataset(FAMILY, [4], 40, seed=12)
    lakes = {p.id: Lake.from_truth(p.truth) for p in pool}
    on_edge = next(p for p in pool if lakes[p.id].player[0] == 0)  # up from the player leaves the map
    walked = next(p for p in pool if len(states(lakes[p.id].player, search(lakes[p.id]))[1].branch) == 2)
    plain = [p for p in pool if p not in (on_edge, walked)][:5]
    puzzles = [*plain, on_edge, walked]
    head = "Find P 1,1, G 4,4.\n"
    branch = states(lakes[walked.id].player, search(lakes[walked.id]))[1].branch
    towards_player = next(m for m, d in MOVES.items() if (branch[1][0] + d[0], branch[1][1] + d[1]) == branch[0])
    says = {
        (plain[0].id, 0): "",  # nothing
        (plain[1].id, 0): "Find the goal.",  # no player found
        (plain[2].id, 1): "Action plan:",  # a plan with no moves
        (plain[3].id, 0): "Find P 9,9, G 1,1.\n9,9 U: 8,9 F",  # a player off the map
        (plain[4].id, 1): "Find G 4,4.\nthen left",  # not a line of the search
        (on_edge.id, 0): head.replace("1,1", cell_name(lakes[on_edge.id].player), 1)
        + _try_line(lakes[on_edge.id].player, "U"),  # a move off the map
        (walked.id, 1): "Find G 4,4.\n" + _try_line(branch[1], towards_player),  # a cell tried already
    }
    planner = ScriptedPlanner(puzzles, says)
    answers = solve(planner, puzzles, "draw")
    assert not any(FAMILY.verify(p, a) for p, a in zip(puzzles, answers, strict=True))
    assert answers[1] == "Find the goal." and answers[2] == "Action plan:" and answers[4].endswith("then left")
    # Each run ended at the turn that did not follow: no turn after it was asked for.
    asked = {c.id.rsplit("-", 1)[0].removeprefix("draw-") for c in planner.seen if c.id.endswith("-2")}
    assert asked == set()


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


def test_the_text_arms_policy_says_it_speaks_search_and_the_agent_runs_it_as_the_closed_loop_does(
    tmp_path: Path,
) -> None:
    from sketchmind.agent import Agent, Budgets
    from sketchmind.models.hf import PROTOCOL_KEY, HFPolicy
    from sketchmind.train.search_rows import search_question
    from sketchmind.train.search_stage import SearchLimits

    micro = load_recipe(ROOT / "policies" / "micro.yaml")
    search = SearchSpec(arm="text", levels=[3], max_steps=2, batch_size=2, eval_every=2, eval_n=1, solve_n=1)
    recipe = micro.model_copy(
        update={
            "output": str(tmp_path / "run"),
            "stages": micro.stages.model_copy(update={"perceive": None, "search": search}),
        }
    )
    Pipeline(recipe, report=lambda line: None).run(only=["synth", "base", "search"])
    final = tmp_path / "run" / "search" / "final"
    assert json.loads((final / "config.json").read_text())[PROTOCOL_KEY] == "search"
    policy = HFPolicy(str(final))
    assert policy.protocol_name == "search"
    # `sketchmind solve` on this policy: its own protocol, and the same first turn as the stage's closed loop
    puzzle = make_dataset(FAMILY, [3], 1, seed=99)[0]
    limits = SearchLimits.of(3)
    agent = Agent(policy, budgets=Budgets(max_turns=1), sampling=Sampling(max_new_tokens=limits.text_tokens))
    trace = agent.solve(puzzle.image, search_question(puzzle))
    assert agent.protocol.name == "search"
    assert trace.steps[0].raw and trace.steps[0].raw == solve(policy, [puzzle], "text")[0]
