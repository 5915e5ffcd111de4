"""The search a frozen-lake solver writes out: a greedy depth-first search, one tried move a line.

A 5 M-parameter model does not find a shortest path in one go, but it can make one small decision at a time.
This search makes every line one such decision:

- from the cell it stands on, try the first move in a fixed order (toward the goal, the longer way first,
  then down, right, up, left) whose cell is inside the map and not yet tried;
- write the move, the cell it reaches and what is there: ``4,4 L: 4,3 F`` (rows and columns from 1);
- a hole is ruled out and the search stays; safe ice extends the branch; the goal ends the search;
- with no move left, the cell is a dead end: ``Back to 4,4`` rules it out and steps back along the branch.

The plan is the branch it ends on. Written this way the search always reaches the goal of a solvable map.
Its state after any line is two sets of cells, the branch and the cells ruled out (``SearchState``), and
that is exactly what a drawn view can show: a path with a dot on its end and a cross on each ruled-out cell.
So a policy that sees such a view needs no history to take the next step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import TYPE_CHECKING

from sketchmind.tasks.base import Puzzle
from sketchmind.tasks.frozenlake import MOVES, Cell, Geometry, Lake

if TYPE_CHECKING:
    import numpy as np

    from sketchmind.actions import Mark

_TRY = re.compile(r"^(\d+),(\d+) ([UDLR]): (\d+),(\d+) ([PFHG])$")
_BACK = re.compile(r"^Back to (\d+),(\d+)$")


def cell_name(cell: Cell) -> str:
    """``2,3``: row, then column, from 1."""
    return f"{cell[0] + 1},{cell[1] + 1}"


@dataclass(frozen=True)
class SearchStep:
    """One line of the search: a tried move (``move`` and ``symbol`` set) or a step back."""

    origin: Cell  # the cell the search stands on before this line
    cell: Cell  # the cell the move reaches, or the cell stepped back to
    move: str | None = None
    symbol: str | None = None

    @property
    def is_back(self) -> bool:
        """Whether this line steps back out of a dead end (no move tried)."""
        return self.move is None

    def text(self) -> str:
        """The line as written: ``4,4 L: 4,3 F`` or ``Back to 4,4``."""
        if self.is_back:
            return f"Back to {cell_name(self.cell)}"
        return f"{cell_name(self.origin)} {self.move}: {cell_name(self.cell)} {self.symbol}"


@dataclass(frozen=True)
class SearchState:
    """Where the search stands: the branch from the player to the current cell, and the cells ruled out."""

    branch: tuple[Cell, ...]
    ruled_out: tuple[Cell, ...] = ()

    @property
    def current(self) -> Cell:
        """The cell the search stands on: the end of the branch (the dot in a view)."""
        return self.branch[-1]

    def after(self, step: SearchStep, lake: Lake | None = None) -> SearchState:
        """The state once ``step`` is taken. Raises ValueError for a step that does not follow from here.

        With ``lake`` a tried move must also reach a cell inside the map that the search has not tried yet
        (a model's line can name any cell); the symbol it says it found is its own reading and is kept.
        """
        if step.origin != self.current:
            raise ValueError(f"the search stands on {cell_name(self.current)}, not {cell_name(step.origin)}")
        if lake is not None and not step.is_back:
            if not lake.inside(step.cell):
                raise ValueError(f"{cell_name(step.cell)} is not on the map")
            if step.cell in self.branch or step.cell in self.ruled_out:
                raise ValueError(f"{cell_name(step.cell)} was tried already")
        if step.is_back:
            if len(self.branch) < 2 or self.branch[-2] != step.cell:
                raise ValueError(f"the search does not stand next to {cell_name(step.cell)}")
            return replace(self, branch=self.branch[:-1], ruled_out=(*self.ruled_out, self.current))
        if step.symbol == "H":
            return replace(self, ruled_out=(*self.ruled_out, step.cell))
        return replace(self, branch=(*self.branch, step.cell))


def move_order(cell: Cell, goal: Cell) -> list[str]:
    """The moves in the order the search tries them from ``cell``: toward the goal, the longer way first."""
    dr, dc = goal[0] - cell[0], goal[1] - cell[1]
    toward = []
    if dr:
        toward.append((abs(dr), "D" if dr > 0 else "U"))
    if dc:
        toward.append((abs(dc), "R" if dc > 0 else "L"))
    first = [move for _, move in sorted(toward, key=lambda t: -t[0])]
    return first + [move for move in "DRUL" if move not in first]


def next_step(lake: Lake, state: SearchState) -> SearchStep | None:
    """The search's next line from ``state`` alone, or None once it stands on the goal.

    A cell is tried at most once: every tried cell is on the branch or ruled out, so the state holds all
    the search has to remember.
    """
    here = state.current
    if here == lake.goal:
        return None
    tried = set(state.branch) | set(state.ruled_out)
    for move in move_order(here, lake.goal):
        cell = lake.step(here, move)
        if lake.inside(cell) and cell not in tried:
            return SearchStep(here, cell, move, lake.symbol(cell))
    if len(state.branch) < 2:
        raise ValueError("the goal cannot be reached")
    return SearchStep(here, state.branch[-2])


def search(lake: Lake) -> list[SearchStep]:
    """Every line of the search, from the player until it reaches the goal."""
    state, steps = SearchState((lake.player,)), []
    while (step := next_step(lake, state)) is not None:
        steps.append(step)
        state = state.after(step)
    return steps


def states(start: Cell, steps: Sequence[SearchStep], lake: Lake | None = None) -> list[SearchState]:
    """The state before the first line and after each one. Raises ValueError if a line does not follow."""
    out = [SearchState((start,))]
    for step in steps:
        out.append(out[-1].after(step, lake))
    return out


def plan_of(state: SearchState) -> list[str]:
    """The moves along the branch."""
    by_delta = {delta: move for move, delta in MOVES.items()}
    return [by_delta[(b[0] - a[0], b[1] - a[1])] for a, b in pairwise(state.branch)]


def parse_step(line: str, origin: Cell) -> SearchStep | None:
    """A written line as a step taken from ``origin`` (where the search stands), or None if it is not one.

    A tried move names the cell it leaves; it must be ``origin`` and the move must reach the cell it names,
    or the line is not a step of this search. Whether the step then follows from the drawn state (a step back
    to the cell before, a cell on the map not tried yet) is ``SearchState.after``'s to say.
    """
    line = line.strip()
    if found := _BACK.match(line):
        return SearchStep(origin, (int(found[1]) - 1, int(found[2]) - 1))
    if not (found := _TRY.match(line)):
        return None
    left = (int(found[1]) - 1, int(found[2]) - 1)
    reached = (int(found[4]) - 1, int(found[5]) - 1)
    dr, dc = MOVES[found[3]]
    if left != origin or (left[0] + dr, left[1] + dc) != reached:
        return None
    return SearchStep(left, reached, found[3], found[6])


def search_marks(geometry: Geometry, state: SearchState) -> list[Mark]:
    """The marks that show ``state`` on the map: the branch as a path, a dot on its end, a cross on each
    cell ruled out. They are the product's own marks, so any renderer or client can draw them."""
    from sketchmind.actions import Dot, Line, Path

    marks: list[Mark] = []
    if len(state.branch) > 1:
        marks.append(Path(points=[geometry.centre(cell) for cell in state.branch], label="path"))
    marks.append(Dot(point=geometry.centre(state.current), label="here"))
    for cell in state.ruled_out:
        x1, y1, x2, y2 = geometry.box(cell)
        marks += [Line(start=[x1, y1], end=[x2, y2], label="no"), Line(start=[x1, y2], end=[x2, y1], label="no")]
    return marks


def search_view(puzzle: Puzzle, state: SearchState | None) -> np.ndarray:
    """The puzzle's image with ``state`` drawn on it (``search_marks``); the bare image for None."""
    import numpy as np

    from sketchmind.render import draw_mark, get_style

    if state is None:
        return puzzle.image  # type: ignore[return-value]
    image = np.array(puzzle.image, copy=True)
    style = get_style("sketchmind")
    for ordinal, mark in enumerate(search_marks(Geometry.of(puzzle, Lake.from_truth(puzzle.truth)), state)):
        draw_mark(image, mark, style, ordinal, tag=False)  # labels name the marks; the view needs no tags
    return image
