"""Wall mazes like ViLaSR's maze-navigation questions: find the moves from S to G, or count the turns.

A maze is an N x N grid of cells with walls between some neighbours, carved by a randomized
depth-first search or Kruskal's algorithm (chosen per puzzle), so it is a perfect maze: every cell is
reachable and the route between two cells is unique. The two hardest levels open a few extra walls
(loops), but only where the shortest route from S to G stays unique, so "the shortest path" is always
well defined.

| level | grid | extra openings |
|---|---|---|
| 1 | 3 x 3 | 0 |
| 2 | 4 x 4 | 0 |
| 3 | 5 x 5 | 0 |
| 4 | 6 x 6 | 1 |
| 5 | 8 x 8 | 2 |

Two question kinds, drawn per puzzle and stored in ``truth["kind"]``:

- ``moves``: answer ``Moves: R,D,...``; any plan that walks from S to G without crossing a wall and
  ends on G is accepted, not only the shortest.
- ``turns``: the number of direction changes along the shortest path; the last integer in the answer
  is compared.

Cells are ``[row, col]``, 0-based, in ``truth``; thoughts say rows and columns 1-based, as people do.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np

from sketchmind.protocols.base import ToolCall
from sketchmind.tasks.base import ExpertTurn, Puzzle, TaskFamily
from sketchmind.tasks.maze_render import MazeStyle, Walls, render_maze, sample_style

Cell = tuple[int, int]

GRID_SIZES: dict[int, int] = {1: 3, 2: 4, 3: 5, 4: 6, 5: 8}
EXTRA_OPENINGS: dict[int, int] = {1: 0, 2: 0, 3: 0, 4: 1, 5: 2}
MOVES: dict[str, Cell] = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
KINDS = ("moves", "turns")
MAX_TURNS = 8  # assistant turns in an expert trajectory, answer included
_DRAW_TURNS = 5  # segment-drawing turns before a reflective correction may add one
_WORDS = {"U": "up", "D": "down", "L": "left", "R": "right"}
_BACK = {"U": "D", "D": "U", "L": "R", "R": "L"}


# ---------------------------------------------------------------------------------------------------------------------
# The maze as a graph


@dataclass
class Grid:
    """Walls of a rows x cols maze: ``right[r, c]`` blocks (r, c)-(r, c+1), ``down[r, c]`` (r, c)-(r+1, c)."""

    right: Walls
    down: Walls

    @classmethod
    def closed(cls, rows: int, cols: int) -> Grid:
        """Every wall standing: the starting point for carving."""
        return cls(np.ones((rows, cols - 1), dtype=bool), np.ones((rows - 1, cols), dtype=bool))

    @classmethod
    def from_truth(cls, truth: Mapping[str, Any]) -> Grid:
        """Read the compact ``truth["walls"]`` strings back into arrays."""
        walls = truth["walls"]
        rows, cols = int(truth["rows"]), int(truth["cols"])
        right = np.array([[ch == "1" for ch in row] for row in walls["right"]], dtype=bool).reshape(rows, cols - 1)
        down = np.array([[ch == "1" for ch in row] for row in walls["down"]], dtype=bool).reshape(rows - 1, cols)
        return cls(right, down)

    def to_truth(self) -> dict[str, list[str]]:
        """Walls as strings of '1' (wall) and '0' (open), one per row: compact and JSON-ready."""
        return {
            "right": ["".join("1" if w else "0" for w in row) for row in self.right],
            "down": ["".join("1" if w else "0" for w in row) for row in self.down],
        }

    @property
    def rows(self) -> int:
        return int(self.right.shape[0])

    @property
    def cols(self) -> int:
        return int(self.down.shape[1])

    def cells(self) -> list[Cell]:
        return [(r, c) for r in range(self.rows) for c in range(self.cols)]

    def inside(self, cell: Cell) -> bool:
        return 0 <= cell[0] < self.rows and 0 <= cell[1] < self.cols

    def _slot(self, a: Cell, b: Cell) -> tuple[Walls, int, int]:
        """The wall array and index separating two adjacent cells."""
        if a[0] == b[0] and abs(a[1] - b[1]) == 1:
            return self.right, a[0], min(a[1], b[1])
        if a[1] == b[1] and abs(a[0] - b[0]) == 1:
            return self.down, min(a[0], b[0]), a[1]
        raise ValueError(f"cells {a} and {b} are not adjacent")

    def is_wall(self, a: Cell, b: Cell) -> bool:
        """Whether a wall separates adjacent cells ``a`` and ``b`` (the outer boundary always does)."""
        if not (self.inside(a) and self.inside(b)):
            return True
        walls, r, c = self._slot(a, b)
        return bool(walls[r, c])

    def set_wall(self, a: Cell, b: Cell, wall: bool) -> None:
        walls, r, c = self._slot(a, b)
        walls[r, c] = wall

    def edges(self) -> list[tuple[Cell, Cell]]:
        """Every pair of adjacent cells, in a fixed order."""
        pairs = [((r, c), (r, c + 1)) for r in range(self.rows) for c in range(self.cols - 1)]
        return pairs + [((r, c), (r + 1, c)) for r in range(self.rows - 1) for c in range(self.cols)]

    def exits(self, cell: Cell, blocked: Cell | None = None) -> list[tuple[str, Cell]]:
        """Open moves from ``cell`` as (move, next cell), in U, D, L, R order, skipping ``blocked``."""
        out = []
        for move, (dr, dc) in MOVES.items():
            nxt = (cell[0] + dr, cell[1] + dc)
            if nxt != blocked and not self.is_wall(cell, nxt):
                out.append((move, nxt))
        return out

    def reachable(self, start: Cell, blocked: Cell | None = None) -> set[Cell]:
        """Cells reachable from ``start`` without entering ``blocked``."""
        seen, todo = {start}, [start]
        while todo:
            for _, nxt in self.exits(todo.pop(), blocked):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def distances(self, start: Cell) -> dict[Cell, int]:
        """Breadth-first step counts from ``start`` to every reachable cell."""
        dist, queue = {start: 0}, deque([start])
        while queue:
            cell = queue.popleft()
            for _, nxt in self.exits(cell):
                if nxt not in dist:
                    dist[nxt] = dist[cell] + 1
                    queue.append(nxt)
        return dist

    def count_shortest(self, start: Cell, goal: Cell) -> int:
        """How many distinct shortest paths join ``start`` and ``goal``."""
        dist = self.distances(start)
        ways = {start: 1}
        for cell in sorted(dist, key=dist.__getitem__)[1:]:
            ways[cell] = sum(ways[prev] for _, prev in self.exits(cell) if dist.get(prev) == dist[cell] - 1)
        return ways.get(goal, 0)

    def shortest_path(self, start: Cell, goal: Cell) -> list[Cell]:
        """The cells of a shortest path from ``start`` to ``goal``, both included."""
        parent: dict[Cell, Cell | None] = {start: None}
        queue = deque([start])
        while queue and goal not in parent:
            cell = queue.popleft()
            for _, nxt in self.exits(cell):
                if nxt not in parent:
                    parent[nxt] = cell
                    queue.append(nxt)
        if goal not in parent:
            raise ValueError(f"goal {goal} is not reachable from {start}")
        path: list[Cell] = [goal]
        while (previous := parent[path[-1]]) is not None:
            path.append(previous)
        return path[::-1]


def carve_dfs(rng: np.random.Generator, n: int) -> Grid:
    """A perfect maze by randomized depth-first search: long winding corridors."""
    grid = Grid.closed(n, n)
    start = (int(rng.integers(n)), int(rng.integers(n)))
    seen, stack = {start}, [start]
    while stack:
        cell = stack[-1]
        fresh = [(cell[0] + dr, cell[1] + dc) for dr, dc in MOVES.values()]
        fresh = [nxt for nxt in fresh if grid.inside(nxt) and nxt not in seen]
        if not fresh:
            stack.pop()
            continue
        nxt = fresh[int(rng.integers(len(fresh)))]
        grid.set_wall(cell, nxt, False)
        seen.add(nxt)
        stack.append(nxt)
    return grid


def carve_kruskal(rng: np.random.Generator, n: int) -> Grid:
    """A perfect maze by randomized Kruskal: many short branches and dead ends."""
    grid = Grid.closed(n, n)
    parent = {cell: cell for cell in grid.cells()}

    def root(cell: Cell) -> Cell:
        while parent[cell] != cell:
            parent[cell] = parent[parent[cell]]
            cell = parent[cell]
        return cell

    edges = grid.edges()
    for i in rng.permutation(len(edges)):
        a, b = edges[int(i)]
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
            grid.set_wall(a, b, False)
    return grid


def open_loops(rng: np.random.Generator, grid: Grid, start: Cell, goal: Cell, count: int) -> int:
    """Open up to ``count`` random walls, keeping the shortest start-goal path unique; returns how many."""
    opened = 0
    walls = [(a, b) for a, b in grid.edges() if grid.is_wall(a, b)]
    for i in rng.permutation(len(walls)):
        if opened == count:
            break
        a, b = walls[int(i)]
        grid.set_wall(a, b, False)
        if grid.count_shortest(start, goal) == 1:
            opened += 1
        else:
            grid.set_wall(a, b, True)
    return opened


# ---------------------------------------------------------------------------------------------------------------------
# Answers: parsing and checking (pure helpers)

_MARKER = re.compile(r"moves?\s*:", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z]+|[→←↑↓]|[.;\n]")
_MOVE_WORDS = {"r": "R", "right": "R", "l": "L", "left": "L", "u": "U", "up": "U", "d": "D", "down": "D"}
_ARROWS = {"→": "R", "←": "L", "↑": "U", "↓": "D"}
_FILLERS = {"then", "and"}
_INTEGER = re.compile(r"-?\d+")


def _as_moves(token: str) -> list[str] | None:
    """The moves one token spells, or None: a word (Right, up), a letter, an arrow or a compact ``RRDL``."""
    if token in _ARROWS:
        return [_ARROWS[token]]
    word = _MOVE_WORDS.get(token.lower())
    if word is not None:
        return [word]
    # Compact runs only in capitals: lower-case words like "dull" are spelled with u, d, l, r too.
    if token.isupper() and set(token) <= set(MOVES):
        return list(token)
    return None


def parse_moves(text: str | None) -> list[str] | None:
    """The moves (``"U"``, ``"D"``, ``"L"``, ``"R"``) an answer gives, or None if it gives none.

    After the last ``Moves:`` the leading run of moves is read and anything after it is ignored.
    Without that marker the whole text must be moves (commas, spaces, arrows, "then", "and" allowed).
    Case, spaces and full words (Right, Left, Up, Down) do not matter.
    """
    if not text:
        return None
    markers = list(_MARKER.finditer(text))
    tokens = _TOKEN.findall(text[markers[-1].end() :] if markers else text)
    moves: list[str] = []
    for token in tokens:
        step = _as_moves(token)
        if step is not None:
            moves.extend(step)
        elif markers and (moves or token not in ".;\n"):
            break  # after "Moves:" the plan ends at the first word that is not a move
        elif not markers and token.lower() not in _FILLERS and token not in ".;\n":
            return None
    return moves or None


def simulate_moves(maze_truth: Mapping[str, Any], moves: Sequence[str]) -> bool:
    """Whether ``moves`` walk from the start to the goal without crossing a wall, ending exactly on the goal."""
    grid = Grid.from_truth(maze_truth)
    r, c = maze_truth["start"]
    for move in moves:
        if move not in MOVES:
            return False
        dr, dc = MOVES[move]
        if grid.is_wall((r, c), (r + dr, c + dc)):
            return False
        r, c = r + dr, c + dc
    return [r, c] == list(maze_truth["goal"])


def count_turns(path: Sequence[Sequence[int]]) -> int:
    """Direction changes along a path of adjacent cells."""
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(path)]
    return sum(1 for s, t in pairwise(steps) if s != t)


def path_moves(path: Sequence[Sequence[int]]) -> list[str]:
    """The moves that walk a path of adjacent cells."""
    by_step = {step: move for move, step in MOVES.items()}
    return [by_step[(b[0] - a[0], b[1] - a[1])] for a, b in pairwise(path)]


def last_integer(text: str | None) -> int | None:
    """The last integer written in ``text``, if any."""
    found = _INTEGER.findall(text or "")
    return int(found[-1]) if found else None


# ---------------------------------------------------------------------------------------------------------------------
# The expert's plan: straight runs and an optional deliberate mistake


@dataclass(frozen=True)
class Run:
    """A straight stretch of the path: from cell ``start`` to cell ``end`` in direction ``move``."""

    start: Cell
    end: Cell
    move: str

    @property
    def length(self) -> int:
        """Cells moved."""
        return abs(self.end[0] - self.start[0]) + abs(self.end[1] - self.start[1])


@dataclass(frozen=True)
class Mistake:
    """A wrong segment the reflective expert draws first, and why it is wrong."""

    index: int  # which run (0-based) is first drawn wrong
    end: Cell  # where the wrong segment ends
    move: str  # the direction it is drawn in
    kind: str  # "wall" or "dead end"
    wall: tuple[Cell, Cell] | None = None  # the wall it crosses


def straight_runs(path: Sequence[Cell]) -> list[Run]:
    """Split a path into maximal straight runs."""
    moves = path_moves(path)
    runs, begin = [], 0
    for i in range(1, len(moves) + 1):
        if i == len(moves) or moves[i] != moves[begin]:
            runs.append(Run(path[begin], path[i], moves[begin]))
            begin = i
    return runs


def _step(cell: Cell, move: str, times: int = 1) -> Cell:
    dr, dc = MOVES[move]
    return cell[0] + dr * times, cell[1] + dc * times


def _mistakes(grid: Grid, path: Sequence[Cell], runs: Sequence[Run]) -> list[Mistake]:
    """Every plausible wrong segment: overshooting through a wall, turning into a wall, or into a dead end."""
    on_path, out = set(path), []
    for i, run in enumerate(runs):
        beyond = _step(run.end, run.move)
        if grid.inside(beyond) and grid.is_wall(run.end, beyond):
            out.append(Mistake(i, beyond, run.move, "wall", (run.end, beyond)))
        back = _BACK[runs[i - 1].move] if i else None
        for move in MOVES:
            if move in (run.move, back):
                continue
            nxt = _step(run.start, move)
            if not grid.inside(nxt):
                continue
            if grid.is_wall(run.start, nxt):
                out.append(Mistake(i, nxt, move, "wall", (run.start, nxt)))
            elif not (grid.reachable(nxt, blocked=run.start) & on_path):
                end = nxt
                while not grid.is_wall(end, _step(end, move)):
                    end = _step(end, move)
                out.append(Mistake(i, end, move, "dead end"))
    return out


def _pos(cell: Cell) -> str:
    return f"row {cell[0] + 1}, column {cell[1] + 1}"


def _target(cell: Cell, move: str) -> str:
    return f"row {cell[0] + 1}" if move in "UD" else f"column {cell[1] + 1}"


def _wall_text(a: Cell, b: Cell) -> str:
    if a[1] == b[1]:
        top = min(a[0], b[0]) + 1
        return f"the wall between rows {top} and {top + 1} in column {a[1] + 1}"
    left = min(a[1], b[1]) + 1
    return f"the wall between columns {left} and {left + 1} in row {a[0] + 1}"


def _run_sentence(i: int, start: Cell, end: Cell, move: str, previous: str | None, goal: Cell) -> str:
    word, target = _WORDS[move], _target(end, move)
    if i == 0:
        text = f"From the start at {_pos(start)} the corridor runs {word} to {target}"
    elif move == previous:
        text = f"At {_pos(start)} it continues {word} to {target}"
    else:
        text = f"At {_pos(start)} it turns {word} and runs to {target}"
    return text + (", where the goal is." if end == goal else ".")


def _correction(mistake: Mistake, grid: Grid, run: Run) -> str:
    label = f"seg{mistake.index + 1}"
    if mistake.wall is not None:
        problem = f"Looking at {label} again, it crosses {_wall_text(*mistake.wall)}, so that way is blocked."
    elif len(grid.exits(mistake.end)) == 1:
        problem = f"Looking at {label} again, it ends in a dead end at {_pos(mistake.end)}."
    else:
        entry = _pos(_step(run.start, mistake.move))
        problem = f"Looking at {label} again, the branch it enters at {entry} only leads to dead ends, never to G."
    fix = f"The open corridor from {_pos(run.start)} runs {_WORDS[run.move]} to {_target(run.end, run.move)}"
    return f"{problem} {fix} instead; I redraw {label}."


def _segment_call(label: str, a: Cell, b: Cell, style: MazeStyle) -> ToolCall:
    (x1, y1), (x2, y2) = style.centre(*a), style.centre(*b)
    return ToolCall("line", {"start": [x1, y1], "end": [x2, y2], "arrow": True, "label": label})


def _box_call(label: str, cell: Cell, style: MazeStyle) -> ToolCall:
    x, y = style.centre(*cell)
    half = style.cell / 2 - style.wall / 2 - 2  # just inside the cell's walls
    return ToolCall("box", {"bbox": [x - half, y - half, x + half, y + half], "label": label})


def _chunks(count: int, split_after: int | None) -> list[range]:
    """Runs grouped into at most ``_DRAW_TURNS`` turns, plus a break right after the mistaken run."""
    size = max(1, math.ceil(count / _DRAW_TURNS))
    bounds = set(range(0, count, size)) | {count}
    if split_after is not None:
        bounds.add(split_after + 1)
    edges = sorted(bounds)
    return [range(a, b) for a, b in pairwise(edges)]


def _rgb(value: Sequence[int]) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in value)
    return r, g, b


def style_from_meta(meta: Mapping[str, Any]) -> MazeStyle:
    """The drawing geometry recorded in a puzzle's ``meta``."""
    return MazeStyle(
        cell=int(meta["cell_size"]),
        margin=int(meta["origin"][0]),
        wall=int(meta["wall_thickness"]),
        wall_rgb=_rgb(meta["wall_color"]),
        background_rgb=_rgb(meta["background"]),
        start_rgb=_rgb(meta["start_color"]),
        goal_rgb=_rgb(meta["goal_color"]),
    )


# ---------------------------------------------------------------------------------------------------------------------
# The family

_INTRO = (
    "This maze is seen from above: dark lines are walls, the green circle S is the start and the red square G "
    "is the goal. You move one cell at a time through open passages and never through a wall."
)
_QUESTIONS = {
    "moves": (
        " What sequence of moves leads from the start (S) to the goal (G)? Use R (right), L (left), U (up) and "
        "D (down), and answer as `Moves: R,D,...`."
    ),
    "turns": " How many turns (changes of direction) does the shortest path from S to G make? Answer with a number.",
}


class Maze(TaskFamily):
    """Wall mazes: give the moves from S to G, or count the turns on the shortest path."""

    name: ClassVar[str] = "maze"
    levels: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)

    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        """A maze of ``GRID_SIZES[level]`` cells a side with S and G far apart, and one question about it."""
        self.check_level(level)
        n = GRID_SIZES[level]
        algorithm = ("dfs", "kruskal")[int(rng.integers(2))]
        grid = carve_dfs(rng, n) if algorithm == "dfs" else carve_kruskal(rng, n)
        start = (int(rng.integers(n)), int(rng.integers(n)))
        dist = grid.distances(start)
        # The goal is at least 60% of the farthest distance away, so the path is worth drawing.
        far = [cell for cell in grid.cells() if dist[cell] >= max(1, math.ceil(0.6 * max(dist.values())))]
        goal = far[int(rng.integers(len(far)))]
        loops = open_loops(rng, grid, start, goal, EXTRA_OPENINGS[level])
        path = grid.shortest_path(start, goal)
        kind = KINDS[int(rng.integers(len(KINDS)))]
        style = sample_style(rng, n, n)
        moves, turns = ",".join(path_moves(path)), count_turns(path)
        truth = {
            "rows": n,
            "cols": n,
            "walls": grid.to_truth(),
            "start": list(start),
            "goal": list(goal),
            "path": [list(cell) for cell in path],
            "kind": kind,
            "expected": moves if kind == "moves" else turns,
            "moves": moves,
            "turns": turns,
        }
        width, height = style.size(n, n)
        meta = {**style.record(), "image_size": [width, height], "algorithm": algorithm, "extra_openings": loops}
        return Puzzle(
            family=self.name,
            level=level,
            index=index,
            question=_INTRO + _QUESTIONS[kind],
            answer=f"Moves: {moves}" if kind == "moves" else str(turns),
            image=render_maze(grid.right, grid.down, start, goal, style),
            truth=truth,
            meta=meta,
        )

    def verify(self, puzzle: Puzzle, answer: str | None) -> bool:
        """``moves``: the plan is simulated against the walls; ``turns``: the last integer must match."""
        if not answer:
            return False
        if puzzle.truth["kind"] == "moves":
            moves = parse_moves(answer)
            return moves is not None and simulate_moves(puzzle.truth, moves)
        return last_integer(answer) == int(puzzle.truth["turns"])

    def expert(self, puzzle: Puzzle, *, reflective: bool = False, seed: int = 0) -> list[ExpertTurn]:
        """Mark S and G, trace the shortest path one straight run (``seg1``, ``seg2``...) at a time, answer.

        With ``reflective=True`` one segment is first drawn through a wall or into a dead end; the next
        thought notices it and the segment is redrawn under the same label.
        """
        truth, style = puzzle.truth, style_from_meta(puzzle.meta)
        grid = Grid.from_truth(truth)
        path: list[Cell] = [(int(r), int(c)) for r, c in truth["path"]]
        start, goal = path[0], path[-1]
        runs = straight_runs(path)
        mistake = None
        if reflective:
            options = _mistakes(grid, path, runs)
            if not options:  # pragma: no cover - every generated maze has a wall or branch beside its path
                raise ValueError(f"{puzzle.id}: no plausible mistake to make")
            # Pick the kind first: walls beside the path far outnumber dead-end branches.
            rng = np.random.default_rng(seed)
            kinds = sorted({m.kind for m in options})
            kind = kinds[int(rng.integers(len(kinds)))]
            options = [m for m in options if m.kind == kind]
            mistake = options[int(rng.integers(len(options)))]
        turns = [
            ExpertTurn(
                f"The start S is at {_pos(start)} and the goal G is at {_pos(goal)}. I mark both, then trace the "
                "open corridors from S one straight stretch at a time.",
                (_box_call("start", start, style), _box_call("goal", goal, style)),
            )
        ]
        turns += self._draw_turns(grid, runs, goal, style, mistake)
        turns.append(self._answer_turn(puzzle, runs, goal))
        return turns

    @staticmethod
    def _draw_turns(
        grid: Grid, runs: Sequence[Run], goal: Cell, style: MazeStyle, mistake: Mistake | None
    ) -> list[ExpertTurn]:
        out: list[ExpertTurn] = []
        pending: tuple[str, ToolCall] | None = None  # the correction waiting for the next turn
        for chunk in _chunks(len(runs), mistake.index if mistake else None):
            thoughts, calls = [pending[0]] if pending else [], [pending[1]] if pending else []
            pending = None
            for i in chunk:
                run, previous = runs[i], runs[i - 1].move if i else None
                label = f"seg{i + 1}"
                if mistake is not None and i == mistake.index:
                    thoughts.append(_run_sentence(i, run.start, mistake.end, mistake.move, previous, goal))
                    calls.append(_segment_call(label, run.start, mistake.end, style))
                    pending = (_correction(mistake, grid, run), _segment_call(label, run.start, run.end, style))
                else:
                    thoughts.append(_run_sentence(i, run.start, run.end, run.move, previous, goal))
                    calls.append(_segment_call(label, run.start, run.end, style))
            out.append(ExpertTurn(" ".join(thoughts), tuple(calls)))
        if pending:  # the mistake was the last segment: correct it in a turn of its own
            out.append(ExpertTurn(pending[0], (pending[1],)))
        return out

    @staticmethod
    def _answer_turn(puzzle: Puzzle, runs: Sequence[Run], goal: Cell) -> ExpertTurn:
        if puzzle.truth["kind"] == "moves":
            moves = ",".join(run.move for run in runs for _ in range(run.length))
            count = sum(run.length for run in runs)
            thought = (
                f"The drawn path reaches the goal at {_pos(goal)} without crossing a wall. Reading the segments "
                f"in order gives {count} moves: {moves}."
            )
            return ExpertTurn(thought, answer=f"Moves: {moves}")
        corners = [_pos(run.start) for run in runs[1:]]
        thought = f"The drawn path has {len(runs)} straight segment{'s' if len(runs) > 1 else ''}"
        if corners:
            thought += f", so it changes direction {len(corners)} times: at {'; '.join(corners)}."
        else:
            thought += ", so it never changes direction: 0 turns."
        return ExpertTurn(thought, answer=str(len(corners)))
