"""FrozenLake: VSP's rules, answer parsing, generation, the three renderings and the drawing expert."""

from __future__ import annotations

from collections import Counter, deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchmind.canvas import Canvas, View
from sketchmind.tasks import get_family, make_dataset
from sketchmind.tasks.base import ExpertTurn, Puzzle
from sketchmind.tasks.frozenlake import (
    MOVES,
    FrozenLake,
    Lake,
    parse_plan,
    random_lake,
    segments,
    simulate,
    solve,
)
from sketchmind.tasks.frozenlake_render import MIN_CELL, STYLES, color_jitter, jpeg, render

# 3x3: player top-left, hole right of it, goal bottom-right.
SMALL = ["@#_", "___", "__*"]


def run_on_canvas(puzzle: Puzzle, turns: list[ExpertTurn]) -> list[str]:
    """Apply every expert call to a canvas of the puzzle's image; return the labels in drawing order."""
    canvas = Canvas(puzzle.image)
    labels = []
    for turn in turns:
        for call in turn.calls:
            outcome = canvas.apply(call.name, call.arguments)
            assert isinstance(outcome, View), f"{puzzle.id}: {call} -> {outcome}"
            assert outcome.size == canvas.source.size  # drawing keeps the input's pixel coordinates
            labels.append(call.arguments["label"])
    return labels


def bfs_distance(lake: Lake) -> int | None:
    """Independent check of ``solve``: plain BFS over safe cells."""
    seen = {lake.player: 0}
    queue = deque([lake.player])
    while queue:
        cell = queue.popleft()
        if cell == lake.goal:
            return seen[cell]
        for move in MOVES:
            nxt = lake.step(cell, move)
            if nxt not in seen and nxt not in lake.holes:
                seen[nxt] = seen[cell] + 1
                queue.append(nxt)
    return None


# --- VSP's rules ------------------------------------------------------------------------------------------


def test_simulate_follows_vsp_rules() -> None:
    assert simulate(SMALL, "DDRR") == "goal"
    assert simulate(SMALL, "R") == "hole"  # falling in ends the game at once
    assert simulate(SMALL, "RDDRR") == "hole"
    assert simulate(SMALL, "DD") == "short"
    assert simulate(SMALL, "") == "short"
    assert simulate(SMALL, "DDRRUUL") == "goal"  # moves after the goal are not played
    assert simulate("@#_\n___\n__*", ["d", "d", "r", "r"]) == "goal"  # lower case, text map


def test_moves_off_the_edge_do_nothing() -> None:
    # Up and left from the top-left corner keep the player there; the plan then still works.
    assert simulate(SMALL, "UULLDDRR") == "goal"
    assert simulate(SMALL, "UL") == "short"
    lake = Lake.from_rows(SMALL)
    assert lake.step((0, 0), "U") == (0, 0)
    assert lake.step((2, 2), "R") == (2, 2)
    with pytest.raises(ValueError, match="unknown move"):
        simulate(SMALL, "X")


def test_lake_round_trips_and_rejects_bad_maps() -> None:
    lake = Lake.from_rows(SMALL)
    assert Lake.from_truth(lake.truth()) == lake
    assert Lake.from_rows(lake.desc()) == lake
    assert lake.desc() == ["SHF", "FFF", "FFG"]
    for bad in (["@_", "_"], ["@__", "___"], ["@*", "*_"], ["@x", "_*"]):
        with pytest.raises(ValueError):
            Lake.from_rows(bad)
    with pytest.raises(ValueError, match="not a frozenlake truth"):
        Lake.from_truth({"rows": 3})


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        ("Action plan: R,D", "RD"),
        ("Step 1 ...\nAction plan: L, L\nChecking again.\nAction plan: R,U,U.", "RUU"),  # the last one counts
        ("action plan:r d d", "RDD"),
        ("**Action plan:** Right, Down, Down", "RDD"),
        ("Action plan: RRDD", "RRDD"),
        ("Action plan:\nR,D", "RD"),
        ("Action plan: R → D → D (reaches the goal)", "RDD"),
        ("Action Plan: [R, D]. Done.", "RD"),
        ("R,D", "RD"),
        ("r d u", "RDU"),
        ("Right, then down", "RD"),
        ("I checked every step.\nAnswer: R, D", "RD"),
    ],
)
def test_parse_plan_tolerates_formats(text: str, plan: str) -> None:
    assert parse_plan(text) == list(plan)


@pytest.mark.parametrize("text", [None, "", "garbage", "Action plan: <PLAN>", "The answer is up", "dull", "42"])
def test_parse_plan_rejects_garbage(text: str | None) -> None:
    assert parse_plan(text) is None


@given(st.lists(st.sampled_from("LRUD"), min_size=1, max_size=20), st.sampled_from([",", ", ", " ", " , "]))
def test_parse_plan_reads_any_formatted_plan(plan: list[str], sep: str) -> None:
    assert parse_plan(f"Reasoning...\nAction plan: {sep.join(plan)}") == plan
    words = {"L": "Left", "R": "right", "U": "UP", "D": "down"}
    assert parse_plan(sep.join(words[m] for m in plan)) == plan


def test_verify_accepts_any_safe_plan_and_rejects_the_rest() -> None:
    family = FrozenLake()
    puzzle = Puzzle("frozenlake", 3, 0, "q", "Action plan: D,D,R,R", None, Lake.from_rows(SMALL).truth())
    assert family.verify(puzzle, "Action plan: D,D,R,R")
    assert family.verify(puzzle, "Thinking... Action plan: D,R,D,R")  # another safe path
    assert family.verify(puzzle, "Action plan: D,D,R,R,U")  # moves after the goal are ignored
    assert not family.verify(puzzle, "Action plan: R,D,D,R")  # into the hole
    assert not family.verify(puzzle, "Action plan: D,D,R")  # stops short
    assert not family.verify(puzzle, "I cannot tell.")
    assert not family.verify(puzzle, None)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 8))
def test_solve_is_shortest_and_safe(seed: int, size: int) -> None:
    lake = random_lake(np.random.default_rng(seed), size)
    plan = solve(lake)
    assert plan is not None
    assert simulate(lake, plan) == "goal"
    assert len(plan) == bfs_distance(lake)
    runs = segments(lake.player, plan)
    assert sum(r.length for r in runs) == len(plan) and runs[-1].end == lake.goal


def test_solve_reports_unreachable_goals() -> None:
    assert solve(Lake.from_rows(["@#_", "#__", "__*"])) is None


# --- generation and rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("level", FrozenLake.levels)
def test_generated_puzzles_are_solvable_and_sized(level: int) -> None:
    family = get_family("frozenlake")
    for puzzle in make_dataset(family, [level], 6, seed=7):
        lake = Lake.from_truth(puzzle.truth)
        assert (lake.rows, lake.cols, puzzle.level) == (level, level, level)
        assert family.verify(puzzle, puzzle.answer)
        assert puzzle.image is not None and puzzle.image.dtype == np.uint8
        height, width = puzzle.image.shape[:2]
        cell = puzzle.meta["cell"]
        assert (width, height) == (cell[0] * level, cell[1] * level) == tuple(puzzle.meta["size"])
        assert max(width, height) <= 512
        assert "Action plan:" in puzzle.question


@pytest.mark.parametrize("style", STYLES)
def test_every_style_renders_at_every_level(style: str) -> None:
    family = FrozenLake(style=style, augment=0.0)  # type: ignore[arg-type]
    for level in FrozenLake.levels:
        puzzle = family.generate(np.random.default_rng(level), level)
        assert puzzle.meta["style"] == style
        assert puzzle.image is not None and puzzle.image.shape == (64 * level, 64 * level, 3)
        assert puzzle.meta["augment"] == {"cell": None, "jitter": None, "jpeg": None}
        desc = Lake.from_truth(puzzle.truth).desc()
        assert np.array_equal(puzzle.image, render(desc, style, palette=puzzle.meta.get("palette", "ice")))  # type: ignore[arg-type]


def test_styles_look_different_and_mark_the_cells() -> None:
    desc = ["SFH", "FFF", "HFG"]
    images = {style: render(desc, style) for style in STYLES}
    assert not np.array_equal(images["classic"], images["gymnasium"])
    assert not np.array_equal(images["classic"], images["vector"])
    for image in images.values():
        ice = image[64:128, 64:128].astype(int)  # a plain safe cell
        for r, c in ((0, 0), (0, 2), (2, 2)):  # player, hole, goal each differ from plain ice
            assert np.abs(image[r * 64 : r * 64 + 64, c * 64 : c * 64 + 64].astype(int) - ice).mean() > 5


def test_styles_are_sampled_and_forced() -> None:
    styles = Counter(p.meta["style"] for p in make_dataset(FrozenLake(augment=0.0), [3], 30))
    assert set(styles) == set(STYLES)
    forced = make_dataset(FrozenLake(style="vector", augment=0.0), [3], 5)
    assert {p.meta["style"] for p in forced} == {"vector"}
    assert {p.meta["palette"] for p in make_dataset(FrozenLake(style="vector"), [3], 20)} > {"ice"}
    with pytest.raises(ValueError, match="unknown frozenlake style"):
        FrozenLake(style="pixel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="levels 3-8"):
        FrozenLake().generate(np.random.default_rng(0), 9)


def test_augmentations_apply_and_are_recorded() -> None:
    family = FrozenLake(style="classic", augment=1.0)
    for level in (3, 8):
        puzzle = family.generate(np.random.default_rng(level), level)
        augment = puzzle.meta["augment"]
        assert MIN_CELL <= augment["cell"] <= 512 // level and puzzle.meta["cell"] == [augment["cell"]] * 2
        assert 60 <= augment["jpeg"] <= 95
        assert set(augment["jitter"]) == {"brightness", "contrast", "saturation", "hue"}
        plain = render(Lake.from_truth(puzzle.truth).desc(), "classic", augment["cell"])
        assert puzzle.image is not None and puzzle.image.shape == plain.shape
        assert 0 < np.abs(puzzle.image.astype(int) - plain).mean() < 40  # changed, still the same picture


def test_color_jitter_and_jpeg_are_deterministic() -> None:
    image = render(["SFH", "FFF", "HFG"], "gymnasium")
    assert np.abs(color_jitter(image, 1, 1, 1, 0).astype(int) - image).mean() < 1  # identity, up to HSV rounding
    a = color_jitter(image, 1.1, 0.9, 1.2, 8)
    assert np.array_equal(a, color_jitter(image, 1.1, 0.9, 1.2, 8)) and not np.array_equal(a, image)
    assert np.array_equal(jpeg(image, 70), jpeg(image, 70))


# --- the expert ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reflective", [False, True])
def test_expert_solves_every_level_by_drawing(reflective: bool) -> None:
    family = FrozenLake(augment=0.5)
    for puzzle in make_dataset(family, FrozenLake.levels, 4, seed=3):
        turns = family.expert(puzzle, reflective=reflective, seed=1)
        assert len(turns) <= 8
        assert turns[-1].answer is not None and family.verify(puzzle, turns[-1].answer)
        assert all(t.answer is None for t in turns[:-1])
        labels = run_on_canvas(puzzle, turns)
        assert labels[:2] == ["player", "goal"]
        assert all(label.startswith("seg") for label in labels[2:])
        repeated = [label for label, n in Counter(labels).items() if n > 1]
        assert len(repeated) == (1 if reflective else 0)


def test_expert_draws_cells_where_they_are() -> None:
    puzzle = FrozenLake(style="vector", augment=0.0).generate(np.random.default_rng(1), 5)
    lake = Lake.from_truth(puzzle.truth)
    turns = FrozenLake().expert(puzzle)
    player_box = turns[0].calls[0].arguments["bbox"]
    r, c = lake.player
    assert c * 64 < player_box[0] < player_box[2] < (c + 1) * 64
    assert r * 64 < player_box[1] < player_box[3] < (r + 1) * 64
    first = next(call for t in turns for call in t.calls if call.name == "line")
    assert first.arguments["start"] == [c * 64 + 32, r * 64 + 32] and first.arguments["arrow"] is True
    assert turns[0].thought.startswith("I read the map:\nRow 1: ") and turns[0].thought.count("\nRow ") == 5
    assert f"The player is at row {r + 1}, column {c + 1}; the goal at row" in turns[0].thought


def test_reflective_expert_notices_and_redraws_its_mistake() -> None:
    family = FrozenLake(style="classic", augment=0.0)
    puzzle = family.generate(np.random.default_rng(11), 6)
    turns = family.expert(puzzle, reflective=True, seed=4)
    calls = [(k, call.arguments["label"]) for k, t in enumerate(turns) for call in t.calls]
    label = next(lab for lab, n in Counter(lab for _, lab in calls).items() if n > 1)
    first, second = [k for k, lab in calls if lab == label]
    assert second == first + 1  # the very next turn fixes it
    assert "redraw" in turns[second].thought.lower()
    assert family.expert(puzzle, reflective=True, seed=4) == turns  # deterministic from the seed


@pytest.mark.parametrize("protocol", ["sketchmind", "vilasr", "openai-tools"])
def test_expert_through_the_agent_loop(protocol: str) -> None:
    from sketchmind.models import expert  # an import error of our own code fails, never skips

    family = FrozenLake()
    for puzzle in make_dataset(family, [4, 8], 1, seed=2):
        for reflective in (False, True):
            trace = expert.run_expert(family, puzzle, protocol=protocol, reflective=reflective)
            assert trace.status == "answered", trace.error
            assert family.verify(puzzle, trace.answer)


def test_forcing_a_style_keeps_the_map() -> None:
    """The style draw happens either way, so the same seed gives the same lake in every style."""
    truths = {style: FrozenLake(style=style).generate(np.random.default_rng(3), 6).truth for style in STYLES}
    assert truths["classic"] == truths["gymnasium"] == truths["vector"]
