"""The frozen-lake search: it always reaches the goal, its state alone gives the next line, lines parse back."""

from __future__ import annotations

import numpy as np
import pytest

from sketchmind.tasks import get_family
from sketchmind.tasks.base import make_dataset
from sketchmind.tasks.frozenlake import Geometry, Lake, random_lake, simulate
from sketchmind.tasks.frozenlake_search import (
    SearchState,
    SearchStep,
    move_order,
    next_step,
    parse_step,
    plan_of,
    search,
    search_view,
    states,
)

# P at 1,1; holes at 1,2 and 2,2; G at 3,3. From 1,1 the two ways tie (down first); from 2,1 right is longer.
LAKE = Lake(3, 3, player=(0, 0), goal=(2, 2), holes=frozenset({(0, 1), (1, 1)}))


def test_the_search_of_a_small_map_is_written_line_by_line() -> None:
    assert [step.text() for step in search(LAKE)] == [
        "1,1 D: 2,1 F",
        "2,1 R: 2,2 H",
        "2,1 D: 3,1 F",
        "3,1 R: 3,2 F",
        "3,2 R: 3,3 G",
    ]
    dead_end = Lake(3, 3, player=(1, 0), goal=(0, 2), holes=frozenset({(0, 1), (1, 1)}))
    lines = [step.text() for step in search(dead_end)]
    # 1,1 is a dead end: ruled out, the search steps back and goes on with the next move from 2,1
    assert lines[:5] == ["2,1 R: 2,2 H", "2,1 U: 1,1 F", "1,1 R: 1,2 H", "Back to 2,1", "2,1 D: 3,1 F"]
    assert move_order((2, 2), (0, 1)) == ["U", "L", "D", "R"]  # toward the goal, the longer way first


def test_the_search_always_reaches_the_goal_and_its_state_alone_gives_each_next_line() -> None:
    rng = np.random.default_rng(0)
    for k in range(120):
        lake = random_lake(rng, 3 + k % 6)
        steps = search(lake)
        after = states(lake.player, steps)
        assert after[-1].current == lake.goal and simulate(lake, plan_of(after[-1])) == "goal"
        for state, step in zip(after, steps, strict=False):
            assert next_step(lake, state) == step  # no history: what is drawn is enough
            assert parse_step(step.text(), state.current) == step


def test_lines_that_do_not_follow_from_the_state_are_refused() -> None:
    start = SearchState(((0, 0),))
    assert parse_step("1,1 D: 2,1 F", (0, 0)) == SearchStep((0, 0), (1, 0), "D", "F")
    assert parse_step("1,2 D: 2,2 F", (0, 0)) is None  # not where the search stands
    assert parse_step("1,1 D: 1,2 F", (0, 0)) is None  # down does not reach 1,2
    assert parse_step("go down", (0, 0)) is None
    with pytest.raises(ValueError, match="does not stand next to"):
        start.after(SearchStep((0, 0), (1, 0)))  # a step back from the player
    with pytest.raises(ValueError, match="stands on 1,1"):
        start.after(SearchStep((2, 2), (2, 1), "L", "F"))
    hole = start.after(SearchStep((0, 0), (0, 1), "R", "H"))
    assert hole == SearchState(((0, 0),), ((0, 1),))  # a hole is ruled out and the search stays
    # Given the map, a model's line must also reach a cell on it that the search has not tried.
    off_map = parse_step("1,1 U: 0,1 F", (0, 0))
    assert off_map is not None and start.after(off_map).current == (-1, 0)  # without the map: only the form
    with pytest.raises(ValueError, match="0,1 is not on the map"):
        start.after(off_map, LAKE)
    with pytest.raises(ValueError, match="1,2 was tried already"):
        hole.after(SearchStep((0, 0), (0, 1), "R", "F"), LAKE)
    assert hole.after(SearchStep((0, 0), (1, 0), "D", "H"), LAKE).ruled_out == ((0, 1), (1, 0))  # its own reading


def test_the_view_draws_the_branch_the_dot_and_the_crosses_and_nothing_else() -> None:
    puzzle = make_dataset(get_family("frozenlake-classic"), [4], 1, seed=3)[0]
    lake = Lake.from_truth(puzzle.truth)
    assert search_view(puzzle, None) is puzzle.image
    state = states(lake.player, search(lake))[2]
    view = search_view(puzzle, state)
    geometry = Geometry.of(puzzle, lake)
    touched = set(state.branch) | set(state.ruled_out)
    for r in range(lake.rows):
        for c in range(lake.cols):
            x, y = (int(v) for v in geometry.centre((r, c)))
            changed = not np.array_equal(view[y, x], puzzle.image[y, x])
            assert changed == ((r, c) in touched), (r, c)
