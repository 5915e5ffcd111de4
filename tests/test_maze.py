"""The maze family: deterministic generation, answer checking, and an expert that draws a real route."""

from __future__ import annotations

import json
import re
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchmind.canvas import Canvas, View
from sketchmind.tasks import Puzzle, make_dataset, puzzle_rng
from sketchmind.tasks.base import ExpertTurn
from sketchmind.tasks.maze import (
    GRID_SIZES,
    MAX_TURNS,
    MOVES,
    Grid,
    Maze,
    count_turns,
    parse_moves,
    simulate_moves,
)

FAMILY = Maze()
LEVELS = Maze.levels
SEEDS = (0, 1, 2)


def make(level: int, index: int, seed: int = 0) -> Puzzle:
    return FAMILY.generate(puzzle_rng("maze", seed, level, index), level, index)


@cache
def puzzles_of(level: int, kind: str, count: int = len(SEEDS)) -> tuple[Puzzle, ...]:
    """The first ``count`` puzzles of a level that ask ``kind`` (the kind is drawn from the rng)."""
    found: list[Puzzle] = []
    index = 0
    while len(found) < count:
        puzzle = make(level, index)
        if puzzle.truth["kind"] == kind:
            found.append(puzzle)
        index += 1
    return tuple(found)


ALL = [(level, kind) for level in LEVELS for kind in ("moves", "turns")]


def replay(puzzle: Puzzle, turns: list[ExpertTurn]) -> Canvas:
    """Apply every expert call to a canvas on the puzzle image; each must make a view."""
    canvas = Canvas(puzzle.image)
    for turn in turns:
        for call in turn.calls:
            outcome = canvas.apply(call.name, call.arguments)
            assert isinstance(outcome, View), f"{puzzle.id}: {call} -> {outcome}"
    return canvas


def cell_at(puzzle: Puzzle, point: list[float]) -> tuple[int, int]:
    """The cell whose exact centre ``point`` is (fails for any other point)."""
    (x0, y0), size = puzzle.meta["origin"], puzzle.meta["cell_size"]
    col, row = (point[0] - x0) / size - 0.5, (point[1] - y0) / size - 0.5
    assert col == int(col) and row == int(row), f"{point} is not a cell centre"
    return int(row), int(col)


# ---------------------------------------------------------------------------------------------------------------------
# Generation


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("index", range(4))
def test_every_level_renders_a_connected_maze(level: int, index: int) -> None:
    puzzle = make(level, index)
    n = GRID_SIZES[level]
    image = puzzle.image
    assert image is not None and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert max(image.shape[:2]) <= 512 and list(image.shape[1::-1]) == puzzle.meta["image_size"]
    json.dumps(puzzle.record())  # truth and meta are JSON-ready
    truth = puzzle.truth
    grid = Grid.from_truth(truth)
    start, goal = tuple(truth["start"]), tuple(truth["goal"])
    assert (grid.rows, grid.cols) == (n, n) and start != goal
    assert grid.reachable(start) == set(grid.cells())  # connected
    open_edges = sum(not grid.is_wall(a, b) for a, b in grid.edges())
    assert open_edges == n * n - 1 + puzzle.meta["extra_openings"]  # a spanning tree plus the loops
    assert grid.count_shortest(start, goal) == 1  # "the shortest path" is well defined
    path = [tuple(c) for c in truth["path"]]
    assert path[0] == start and path[-1] == goal and path == grid.shortest_path(start, goal)
    assert simulate_moves(truth, truth["moves"].split(","))
    assert truth["turns"] == count_turns(path)
    # Walls are dark, the background light, S green and G red where the meta says.
    x0, size = puzzle.meta["origin"][0], puzzle.meta["cell_size"]
    assert image[x0, x0 + size // 2].max() <= 100
    free = next(cell for cell in grid.cells() if cell not in (start, goal))
    inside = image[x0 + free[0] * size + size // 4, x0 + free[1] * size + size // 2]
    assert list(inside) == puzzle.meta["background"] and min(inside) >= 200
    sx, sy = (x0 + (start[1] + 0.5) * size, x0 + (start[0] + 0.5) * size)
    gx, gy = (x0 + (goal[1] + 0.5) * size, x0 + (goal[0] + 0.5) * size)
    r, g, b = (int(v) for v in image[int(sy), int(sx - 0.2 * size)])
    assert g > r + 60 and g > b + 40
    r, g, b = (int(v) for v in image[int(gy - 0.25 * size), int(gx - 0.25 * size)])
    assert r > g + 100 and r > b + 100


def test_levels_grow_and_loops_appear_only_at_the_top() -> None:
    assert tuple(GRID_SIZES) == LEVELS
    puzzles = make_dataset(FAMILY, LEVELS, 6, seed=1)
    for puzzle in puzzles:
        assert puzzle.truth["rows"] == GRID_SIZES[puzzle.level]
        assert (puzzle.meta["extra_openings"] > 0) == (puzzle.level >= 4)
    styles = {(p.meta["cell_size"], p.meta["wall_thickness"], tuple(p.meta["wall_color"])) for p in puzzles}
    assert len(styles) > len(puzzles) // 2  # the look varies from puzzle to puzzle
    assert {p.truth["kind"] for p in puzzles} == {"moves", "turns"}
    assert {p.meta["algorithm"] for p in puzzles} == {"dfs", "kruskal"}


# ---------------------------------------------------------------------------------------------------------------------
# Answers


def test_parse_moves_is_tolerant() -> None:
    assert parse_moves("Moves: R,D,D") == ["R", "D", "D"]
    assert parse_moves("moves:  right, Down ,UP , left") == ["R", "D", "U", "L"]
    assert parse_moves("MOVES: RRDL") == ["R", "R", "D", "L"]
    assert parse_moves("Moves: U\nthinking again...\nMoves: R, D. That reaches G.") == ["R", "D"]
    assert parse_moves("Moves:\nR -> D -> L") == ["R", "D", "L"]
    assert parse_moves("R, D, D") == ["R", "D", "D"]
    assert parse_moves("right then down and down") == ["R", "D", "D"]
    assert parse_moves("→ ↓ ↓") == ["R", "D", "D"]
    for junk in (None, "", "no idea", "Moves:", "Moves: forward", "The answer is R, D", "42"):
        assert parse_moves(junk) is None, junk


_SPELLINGS = {"U": ("U", "u", "Up", "UP"), "D": ("D", "d", "Down"), "L": ("L", "left", "Left"), "R": ("R", "right")}


@settings(max_examples=60, deadline=None)
@given(
    moves=st.lists(st.sampled_from(sorted(MOVES)), min_size=1, max_size=30),
    separator=st.sampled_from([",", ", ", " ", " -> ", " , "]),
    marker=st.sampled_from(["Moves: ", "moves:", "MOVES : ", ""]),
    data=st.data(),
)
def test_parse_moves_round_trips(moves: list[str], separator: str, marker: str, data: st.DataObject) -> None:
    words = [data.draw(st.sampled_from(_SPELLINGS[m])) for m in moves]
    assert parse_moves(marker + separator.join(words)) == moves


def test_count_turns() -> None:
    assert count_turns([(0, 0)]) == 0
    assert count_turns([(0, 0), (0, 1), (0, 2)]) == 0
    assert count_turns([(0, 0), (0, 1), (1, 1)]) == 1
    assert count_turns([(0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]) == 3


@pytest.mark.parametrize("level", LEVELS)
def test_verify_moves(level: int) -> None:
    for puzzle in puzzles_of(level, "moves"):
        truth, moves = puzzle.truth, puzzle.truth["moves"].split(",")
        grid, goal = Grid.from_truth(truth), tuple(truth["goal"])
        assert FAMILY.verify(puzzle, puzzle.answer)
        assert FAMILY.verify(puzzle, f"I traced it.\nMoves: {', '.join(moves).lower()}")
        assert not FAMILY.verify(puzzle, f"Moves: {','.join(moves[:-1])}")  # stops short
        assert not FAMILY.verify(puzzle, f"Moves: {','.join([*moves, moves[-1]])}")  # walks past G (or into a wall)
        for bad in (None, "", "garbage", "Moves: ", "7"):
            assert not FAMILY.verify(puzzle, bad)
        # A detour into an open side cell and back is a valid (if longer) plan.
        cell = tuple(truth["start"])
        move, _ = grid.exits(cell)[0]
        back = {"U": "D", "D": "U", "L": "R", "R": "L"}[move]
        assert FAMILY.verify(puzzle, "Moves: " + ",".join([move, back, *moves]))
        # Through a wall: step from S into any walled neighbour, whatever follows.
        blocked = [m for m, (dr, dc) in MOVES.items() if grid.is_wall(cell, (cell[0] + dr, cell[1] + dc))]
        assert not FAMILY.verify(puzzle, "Moves: " + ",".join([blocked[0], *moves]))
        # Straight at G ignoring walls ends on G; it must fail exactly when it crosses a wall.
        dr, dc = goal[0] - cell[0], goal[1] - cell[1]
        naive = ["D" if dr > 0 else "U"] * abs(dr) + ["R" if dc > 0 else "L"] * abs(dc)
        assert FAMILY.verify(puzzle, "Moves: " + ",".join(naive)) == (naive == moves)


@pytest.mark.parametrize("level", LEVELS)
def test_verify_turns(level: int) -> None:
    for puzzle in puzzles_of(level, "turns"):
        turns = puzzle.truth["turns"]
        assert FAMILY.verify(puzzle, puzzle.answer)
        assert FAMILY.verify(puzzle, f"Counting the corners, the path turns {turns}")
        assert FAMILY.verify(puzzle, f"Maybe 99... no: {turns}.")
        for wrong in (turns + 1, turns - 1, turns + 10):
            assert not FAMILY.verify(puzzle, str(wrong))
        for bad in (None, "", "garbage", f"Moves: {puzzle.truth['moves']}"):
            assert not FAMILY.verify(puzzle, bad)


def test_simulate_moves_rejects_unknown_moves() -> None:
    truth = make(1, 0).truth
    assert not simulate_moves(truth, ["X"])
    assert not simulate_moves(truth, [])


# ---------------------------------------------------------------------------------------------------------------------
# Expert


def drawn_segments(puzzle: Puzzle, canvas: Canvas) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The final ``segN`` lines on the canvas, in order, as (start cell, end cell)."""
    lines = {m.label: m for m in canvas.latest.marks if m.label and m.label.startswith("seg")}
    ordered = sorted(lines, key=lambda label: int(label[3:]))
    assert ordered == [f"seg{k}" for k in range(1, len(ordered) + 1)]
    return [(cell_at(puzzle, lines[k].start), cell_at(puzzle, lines[k].end)) for k in ordered]  # type: ignore[attr-defined]


def assert_follows_corridors(puzzle: Puzzle, canvas: Canvas) -> None:
    """The drawn segments chain from S to G along the shortest path without crossing a wall."""
    grid = Grid.from_truth(puzzle.truth)
    walked = [tuple(puzzle.truth["start"])]
    for a, b in drawn_segments(puzzle, canvas):
        assert a == walked[-1], "segments must join end to start"
        assert a[0] == b[0] or a[1] == b[1], "segments are straight"
        dr, dc = np.sign(b[0] - a[0]), np.sign(b[1] - a[1])
        while walked[-1] != b:
            here = walked[-1]
            nxt = (int(here[0] + dr), int(here[1] + dc))
            assert not grid.is_wall(here, nxt), f"{puzzle.id}: segment crosses a wall at {here}-{nxt}"
            walked.append(nxt)
    assert walked == [tuple(c) for c in puzzle.truth["path"]]


@pytest.mark.parametrize(("level", "kind"), ALL)
def test_expert_solves_by_drawing(level: int, kind: str) -> None:
    for puzzle in puzzles_of(level, kind):
        turns = FAMILY.expert(puzzle)
        assert 3 <= len(turns) <= MAX_TURNS
        assert all(t.answer is None for t in turns[:-1]) and turns[-1].answer is not None
        assert FAMILY.verify(puzzle, turns[-1].answer)
        first = {c.arguments["label"] for c in turns[0].calls}
        assert first == {"start", "goal"}
        labels = [c.arguments["label"] for t in turns for c in t.calls]
        assert len(labels) == len(set(labels))  # no redraws without reflection
        assert all(c.name == "line" and c.arguments["arrow"] for t in turns[1:] for c in t.calls)
        assert "row " in turns[1].thought and "column " in turns[1].thought
        if kind == "turns":
            assert f"{puzzle.truth['turns']} times" in turns[-1].thought or "0 turns" in turns[-1].thought
        assert_follows_corridors(puzzle, replay(puzzle, turns))


@pytest.mark.parametrize(("level", "kind"), ALL)
def test_reflective_expert_fixes_a_drawn_mistake(level: int, kind: str) -> None:
    for seed, puzzle in enumerate(puzzles_of(level, kind)):
        turns = FAMILY.expert(puzzle, reflective=True, seed=seed)
        assert len(turns) <= MAX_TURNS
        assert FAMILY.verify(puzzle, turns[-1].answer)
        labels = [c.arguments["label"] for t in turns for c in t.calls]
        twice = [label for label in set(labels) if labels.count(label) == 2]
        assert len(twice) == 1 and len(labels) == len(set(labels)) + 1
        label = twice[0]
        # The wrong segment ends its turn and the next thought notices it before the redraw.
        where = next(i for i, t in enumerate(turns) if t.calls and t.calls[-1].arguments["label"] == label)
        fix = turns[where + 1]
        assert fix.calls[0].arguments["label"] == label
        assert re.search(r"crosses the wall|dead end", fix.thought) and f"redraw {label}" in fix.thought
        assert_follows_corridors(puzzle, replay(puzzle, turns))  # the redraw replaced the mistake


def test_reflective_mistakes_vary_with_the_seed() -> None:
    puzzle = puzzles_of(5, "moves")[0]
    kinds = set()
    for seed in range(12):
        turns = FAMILY.expert(puzzle, reflective=True, seed=seed)
        kinds.add("wall" if any("crosses the wall" in t.thought for t in turns) else "dead end")
    assert kinds == {"wall", "dead end"}


@pytest.mark.parametrize("protocol", ["sketchmind", "vilasr"])
def test_expert_runs_through_the_agent(protocol: str) -> None:
    from sketchmind.models import expert  # an import error of our own code fails, never skips

    for level, kind in ((1, "moves"), (5, "turns")):
        puzzle = puzzles_of(level, kind)[0]
        for reflective in (False, True):
            trace = expert.run_expert(FAMILY, puzzle, protocol=protocol, reflective=reflective)
            assert trace.status == "answered", trace.error
            assert FAMILY.verify(puzzle, trace.answer)
