"""FrozenLake: VSP's maze task as an unlimited puzzle family.

An ``n`` x ``n`` lake (level = ``n``, 3-8) has a player, a goal and holes; the answer is a move list
``Action plan: R,D,...``. ``verify`` scores it with VSP's rules: a move off the edge does nothing, a move
into a hole loses at once, reaching the goal wins (later moves are not looked at) and a plan that ends
anywhere else loses. The expert writes the map down, boxes the player and the goal, then traces the
shortest safe path one straight segment a turn, checking every cell it crosses against the map it wrote,
and reads the plan off its drawing.

Cells are ``(row, col)``, 0-based in ``Puzzle.truth``; thoughts use VSP's 1-based "row 2, column 3".
"""

from __future__ import annotations

import heapq
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from sketchmind.protocols.base import ToolCall
from sketchmind.tasks.base import ExpertTurn, Puzzle, TaskFamily
from sketchmind.tasks.frozenlake_render import (
    MAX_SIDE,
    NATIVE_CELL,
    PALETTES,
    STYLES,
    Style,
    apply_augment,
    render,
    sample_augment,
)

Cell = tuple[int, int]
Outcome = Literal["goal", "hole", "short"]
MOVES: dict[str, Cell] = {"L": (0, -1), "R": (0, 1), "U": (-1, 0), "D": (1, 0)}
MOVE_NAMES = {"L": "left", "R": "right", "U": "up", "D": "down"}
MAX_SEGMENT_TURNS = 6  # drawing turns for the path; with boxes, a fix and the answer: <= 9 turns
READ_SYMBOLS = {"player": "P", "goal": "G", "hole": "H", "safe": "F"}  # a space + a letter: one token each

_LEGENDS: dict[str, str] = {
    "classic": "The elf is the player, the wrapped present is the goal, and the blue ice patches are holes.",
    "gymnasium": "The figure is the player, the flag marked G is the goal, and the dark blue tiles are holes.",
    "vector": "The circle is the player, the star is the goal, and the dark squares are holes.",
}


# --- the map -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lake:
    """A frozen-lake map: grid size, player, goal and holes as 0-based ``(row, col)`` cells."""

    rows: int
    cols: int
    player: Cell
    goal: Cell
    holes: frozenset[Cell]

    def __post_init__(self) -> None:
        cells = [self.player, self.goal, *self.holes]
        if self.rows < 1 or self.cols < 1 or not all(self.inside(c) for c in cells):
            raise ValueError(f"a {self.rows}x{self.cols} map has a cell outside it: {sorted(cells)}")
        if self.player == self.goal or self.player in self.holes or self.goal in self.holes:
            raise ValueError("player, goal and holes must be on different cells")

    @classmethod
    def from_truth(cls, truth: Mapping[str, Any]) -> Lake:
        """From ``Puzzle.truth`` (``rows``, ``cols``, ``player``, ``goal``, ``holes``)."""
        try:
            return cls(
                int(truth["rows"]),
                int(truth["cols"]),
                _cell(truth["player"]),
                _cell(truth["goal"]),
                frozenset(_cell(h) for h in truth["holes"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a frozenlake truth record: {exc}") from None

    @classmethod
    def from_rows(cls, rows: Sequence[str]) -> Lake:
        """From one string per row: VSP's ``@ * # _`` or gym's ``S G H F`` (spaces ignored)."""
        grid = [row.replace(" ", "") for row in rows if row.strip()]
        found: dict[str, list[Cell]] = {"player": [], "goal": [], "hole": []}
        kinds = {"@": "player", "S": "player", "*": "goal", "G": "goal", "#": "hole", "H": "hole"}
        for r, row in enumerate(grid):
            for c, char in enumerate(row):
                if char in kinds:
                    found[kinds[char]].append((r, c))
                elif char not in "_F":
                    raise ValueError(f"unknown map symbol {char!r} at row {r + 1}, column {c + 1}")
        if not grid or len({len(row) for row in grid}) != 1:
            raise ValueError("map rows are empty or of different lengths")
        if len(found["player"]) != 1 or len(found["goal"]) != 1:
            raise ValueError(
                f"a map needs one player and one goal, got {len(found['player'])} and {len(found['goal'])}"
            )
        return cls(len(grid), len(grid[0]), found["player"][0], found["goal"][0], frozenset(found["hole"]))

    def truth(self) -> dict[str, Any]:
        """JSON-ready record for ``Puzzle.truth``."""
        return {
            "rows": self.rows,
            "cols": self.cols,
            "player": list(self.player),
            "goal": list(self.goal),
            "holes": [list(h) for h in sorted(self.holes)],
        }

    def desc(self) -> list[str]:
        """gym's map strings: ``S`` player, ``G`` goal, ``H`` hole, ``F`` frozen."""
        tiles = {self.player: "S", self.goal: "G"} | dict.fromkeys(self.holes, "H")
        return ["".join(tiles.get((r, c), "F") for c in range(self.cols)) for r in range(self.rows)]

    def symbol(self, cell: Cell) -> str:
        """What a reader writes for ``cell`` (``READ_SYMBOLS``): ``P``, ``G``, ``H`` or ``F``."""
        if cell == self.player:
            return READ_SYMBOLS["player"]
        if cell == self.goal:
            return READ_SYMBOLS["goal"]
        return READ_SYMBOLS["hole"] if cell in self.holes else READ_SYMBOLS["safe"]

    def inside(self, cell: Cell) -> bool:
        return 0 <= cell[0] < self.rows and 0 <= cell[1] < self.cols

    def step(self, cell: Cell, move: str) -> Cell:
        """The cell a move leads to; off the edge the player stays where it is (VSP's rule)."""
        dr, dc = MOVES[move]
        target = (cell[0] + dr, cell[1] + dc)
        return target if self.inside(target) else cell


def _cell(value: Any) -> Cell:
    row, col = value
    return int(row), int(col)


def _as_lake(grid: Lake | Mapping[str, Any] | Sequence[str]) -> Lake:
    if isinstance(grid, Lake):
        return grid
    if isinstance(grid, Mapping):
        return Lake.from_truth(grid)
    if isinstance(grid, str):
        return Lake.from_rows(grid.splitlines())
    return Lake.from_rows(grid)


def simulate(grid: Lake | Mapping[str, Any] | Sequence[str], plan: Iterable[str]) -> Outcome:
    """Play ``plan`` (letters L, R, U, D) on a map with VSP's rules.

    ``grid`` is a ``Lake``, a truth record, or rows of symbols (see ``Lake.from_rows``). Returns
    ``"hole"`` as soon as a move lands in a hole, ``"goal"`` as soon as one lands on the goal (the rest
    of the plan is ignored, as VSP stops there) and ``"short"`` if the plan ends anywhere else.
    """
    lake = _as_lake(grid)
    cell = lake.player
    for move in plan:
        key = move.upper()
        if key not in MOVES:
            raise ValueError(f"unknown move {move!r}; moves are L, R, U, D")
        cell = lake.step(cell, key)
        if cell in lake.holes:
            return "hole"
        if cell == lake.goal:
            return "goal"
    return "short"


def solve(lake: Lake) -> list[str] | None:
    """A shortest safe plan, with the fewest turns among those (easier to draw); ``None`` if none exists."""
    start: tuple[Cell, str] = (lake.player, "")
    best: dict[tuple[Cell, str], tuple[int, int]] = {start: (0, 0)}
    previous: dict[tuple[Cell, str], tuple[Cell, str]] = {}
    heap: list[tuple[int, int, int, Cell, str]] = [(0, 0, 0, lake.player, "")]
    order = 0
    while heap:
        steps, turns, _, cell, last = heapq.heappop(heap)
        if best[(cell, last)] < (steps, turns):
            continue
        if cell == lake.goal:
            plan, state = [], (cell, last)
            while state != start:
                plan.append(state[1])
                state = previous[state]
            return plan[::-1]
        for move in "RDLU":
            target = lake.step(cell, move)
            if target == cell or target in lake.holes:
                continue
            cost = (steps + 1, turns + (last not in ("", move)))
            if cost < best.get((target, move), (1 << 30, 0)):
                best[(target, move)] = cost
                previous[(target, move)] = (cell, last)
                order += 1
                heapq.heappush(heap, (*cost, order, target, move))
    return None


def random_lake(rng: np.random.Generator, size: int) -> Lake:
    """A solvable ``size`` x ``size`` lake: holes with probability 0.1-0.3 each (VSP's maps are ~0.2)."""
    for _ in range(1000):
        rate = rng.uniform(0.1, 0.3)
        holes = rng.random((size, size)) < rate
        free = np.flatnonzero(~holes)
        if free.size < 2:
            continue
        player, goal = (divmod(int(k), size) for k in rng.choice(free, 2, replace=False))
        cells = {divmod(int(k), size) for k in np.flatnonzero(holes)}
        lake = Lake(size, size, player, goal, frozenset(cells))
        if solve(lake) is not None:
            return lake
    raise RuntimeError(f"no solvable {size}x{size} lake in 1000 tries")  # pragma: no cover - p(fail) ~ 0


# --- reading answers -----------------------------------------------------------------------------------

_WORDS = {"l": "L", "left": "L", "r": "R", "right": "R", "u": "U", "up": "U", "d": "D", "down": "D"}
_FILLER = {"move", "moves", "moving", "go", "then", "and", "step", "steps", "first", "finally", "next"}
_MARKER = re.compile(r"action[\s_-]*plan\s*[:：]", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z]+")
_PREFIX = re.compile(r"^[\w\s]{0,30}[:：]")  # "Answer:", "Final plan:" before a bare plan


def _moves(text: str, strict: bool) -> list[str] | None:
    """Moves in ``text``. Strict: every word must be a move; else stop at the first other word."""
    moves: list[str] = []
    for token in _TOKEN.findall(text):
        low = token.lower()
        if low in _WORDS:
            moves.append(_WORDS[low])
        elif low in _FILLER:
            continue
        elif token.isupper() and set(token) <= set(MOVES):
            moves.extend(token)  # "RRDD": letters run together
        elif strict or not moves:
            return None
        else:
            break
    return moves or None


def parse_plan(text: str | None) -> list[str] | None:
    """The move letters of an answer, or ``None`` if it holds no plan.

    Reads what follows the LAST "Action plan:" (to the end of its sentence; the next line if that is
    empty), else a text or final line that is nothing but moves. Tolerates case, spacing, commas, arrows
    and full words ("Right, then Down").
    """
    if not text:
        return None
    markers = list(_MARKER.finditer(text))
    if markers:
        rest = text[markers[-1].end() :]
        lines = [line for line in rest.splitlines() if line.strip()]
        first = rest.split("\n", 1)[0]
        line = first if _TOKEN.search(first) else (lines[0] if lines else "")
        return _moves(line.split(".", 1)[0], strict=False)
    whole = _moves(text, strict=True)
    if whole is not None:
        return whole
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _moves(_PREFIX.sub("", lines[-1]), strict=True) if lines else None


def format_plan(plan: Sequence[str]) -> str:
    """``Action plan: R,U,U``."""
    return "Action plan: " + ",".join(plan)


def question_text(style: str, rows: int, cols: int) -> str:
    """The question, worded after VSP's maze prompt, with a one-line legend for the rendering style."""
    legend = _LEGENDS.get(style, _LEGENDS["classic"])
    return (
        f"This frozen-lake map has {rows} rows and {cols} columns, numbered from 1 at the top-left. {legend} "
        "Find an action plan that takes the player to the goal without falling into any hole, using the fewest "
        "moves. Moves are L (left), R (right), U (up) and D (down); moving off the edge of the map has no effect. "
        'Give your answer as "Action plan: <PLAN>", e.g. "Action plan: L,L,R,U,D".'
    )


# --- the expert's drawing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A straight run of the path: ``length`` moves of ``move`` from ``start`` to ``end``."""

    move: str
    length: int
    start: Cell
    end: Cell


def segments(start: Cell, plan: Sequence[str]) -> list[Segment]:
    """Split a plan into maximal straight runs (the plan must stay on the map)."""
    runs: list[Segment] = []
    cell = start
    for move in plan:
        dr, dc = MOVES[move]
        nxt = (cell[0] + dr, cell[1] + dc)
        if runs and runs[-1].move == move:
            last = runs[-1]
            runs[-1] = Segment(move, last.length + 1, last.start, nxt)
        else:
            runs.append(Segment(move, 1, cell, nxt))
        cell = nxt
    return runs


@dataclass(frozen=True)
class Geometry:
    """Where cells are in the image: cell ``(r, c)`` spans ``origin + [c, r] * cell`` to one cell further."""

    x0: float
    y0: float
    width: float
    height: float

    @classmethod
    def of(cls, puzzle: Puzzle, lake: Lake) -> Geometry:
        """From ``meta["cell"]`` and ``meta["origin"]``; inferred from the image size when absent."""
        origin = puzzle.meta.get("origin", (0, 0))
        cell = puzzle.meta.get("cell")
        if cell is None:
            if puzzle.image is None:
                raise ValueError(f"{puzzle.id}: no image and no cell size in meta")
            h, w = puzzle.image.shape[:2]
            cell = ((w - origin[0]) / lake.cols, (h - origin[1]) / lake.rows)
        elif not isinstance(cell, Sequence):
            cell = (cell, cell)
        return cls(float(origin[0]), float(origin[1]), float(cell[0]), float(cell[1]))

    def centre(self, cell: Cell) -> list[float]:
        return [_px(self.x0 + (cell[1] + 0.5) * self.width), _px(self.y0 + (cell[0] + 0.5) * self.height)]

    def box(self, cell: Cell) -> list[float]:
        inset = max(1.0, round(min(self.width, self.height) * 0.06))
        x, y = self.x0 + cell[1] * self.width, self.y0 + cell[0] * self.height
        return [_px(x + inset), _px(y + inset), _px(x + self.width - inset), _px(y + self.height - inset)]


def _px(value: float) -> float:
    """Pixel coordinates as a person writes them: whole numbers where exact, else one decimal."""
    rounded = round(value, 1)
    return int(rounded) if rounded == int(rounded) else rounded


def _where(cell: Cell) -> str:
    return f"row {cell[0] + 1}, column {cell[1] + 1}"


def _walk(lake: Lake, run: Segment) -> str:
    """A segment checked cell by cell against the map just read: "Down 2: row 2, column 3 F, row 3, column 3 G."

    Each turn is then one small decision (which way, how far) followed by look-ups in the map the first
    thought wrote down, so a hole on the way shows up in the text as an ``H`` before the next turn.
    """
    cells, cell = [], run.start
    for _ in range(run.length):
        cell = lake.step(cell, run.move)
        cells.append(f"{_where(cell)} {lake.symbol(cell)}")
    return f"{MOVE_NAMES[run.move].capitalize()} {run.length}: {', '.join(cells)}."


def _line(geometry: Geometry, run: Segment, label: str) -> ToolCall:
    start, end = geometry.centre(run.start), geometry.centre(run.end)
    return ToolCall("line", {"start": start, "end": end, "arrow": True, "label": label})


def _chunks(runs: Sequence[Segment], parts: int) -> list[list[int]]:
    """Segment indices split into at most ``parts`` consecutive groups of near-equal size."""
    per = -(-len(runs) // parts)
    return [list(range(k, min(k + per, len(runs)))) for k in range(0, len(runs), per)]


@dataclass(frozen=True)
class _Mistake:
    index: int  # which segment is drawn wrong first
    wrong: Segment
    notice: str  # the thought that spots it


def _scan(lake: Lake, cell: Cell, move: str) -> list[Cell]:
    """The cells straight ahead of ``cell``, up to and including the first hole, stopping at the edge or goal."""
    ahead: list[Cell] = []
    while (nxt := lake.step(cell, move)) != cell and nxt != lake.goal:
        ahead.append(nxt)
        if nxt in lake.holes:
            break
        cell = nxt
    return ahead


def _mistakes(lake: Lake, run: Segment, index: int) -> tuple[list[_Mistake], list[_Mistake]]:
    """Wrong versions of a segment: (those into a hole, other slips: the wrong way or one cell too far)."""
    holes: list[_Mistake] = []
    slips: list[_Mistake] = []
    for move in MOVES:
        if move == run.move:  # overshoot: one cell past the turn
            ahead = _scan(lake, run.end, move)[:1] if run.end != lake.goal else []
            length = run.length
        else:
            ahead = _scan(lake, run.start, move)
            length = 0
        near = move == run.move or len(ahead) <= min(run.length, 3)  # a slip, not a detour across the map
        if ahead and ahead[-1] in lake.holes and near:
            wrong = Segment(move, length + len(ahead), run.start, ahead[-1])
            notice = f"That segment ends in a hole at {_where(ahead[-1])}. Redraw it:"
            holes.append(_Mistake(index, wrong, notice))
        elif ahead and move == run.move:
            notice = f"That segment overshoots; the route turns at {_where(run.end)}. Redraw it:"
            slips.append(_Mistake(index, Segment(move, length + 1, run.start, ahead[0]), notice))
        elif ahead:
            end = ahead[min(run.length, len(ahead)) - 1]
            wrong = Segment(move, min(run.length, len(ahead)), run.start, end)
            notice = f"That segment goes {MOVE_NAMES[move]}, the wrong way. Redraw it:"
            slips.append(_Mistake(index, wrong, notice))
    return holes, slips


def _pick_mistake(lake: Lake, runs: Sequence[Segment], rng: np.random.Generator) -> _Mistake:
    """A plausible slip for one segment, preferring a step into a hole (what the task is about)."""
    holes: list[_Mistake] = []
    slips: list[_Mistake] = []
    for k, run in enumerate(runs):
        h, s = _mistakes(lake, run, k)
        holes += h
        slips += s
    options = holes or slips
    if not options:  # pragma: no cover - a 3x3+ grid always leaves another way out of a cell
        raise ValueError("no plausible mistake for this path")
    return options[int(rng.integers(len(options)))]


def transcribe(lake: Lake) -> str:
    """The map as one ``Row k: ...`` line per row, one symbol per cell (``READ_SYMBOLS``): what a reader sees."""
    return "\n".join(
        f"Row {r + 1}: " + " ".join(lake.symbol((r, c)) for c in range(lake.cols)) for r in range(lake.rows)
    )


def _intro(lake: Lake) -> str:
    """The first thought: the map read cell by cell (the skill the perceive stage teaches), then where the ends are.

    Writing the whole map first makes every later decision a look-up in the text just written; the player
    and goal sentence reads them back out of it.
    """
    return (
        f"I read the map:\n{transcribe(lake)}\nThe player is at {_where(lake.player)}; the goal at {_where(lake.goal)}."
    )


# --- the family -----------------------------------------------------------------------------------------


class FrozenLake(TaskFamily):
    """VSP's FrozenLake maze: reach the goal without stepping into a hole.

    Args:
        style: force one rendering (``classic``, ``gymnasium``, ``vector``); by default each puzzle draws one.
        augment: probability of each augmentation (cell size, colour jitter, JPEG); 0 renders plainly.
    """

    name: ClassVar[str] = "frozenlake"
    levels: ClassVar[tuple[int, ...]] = (3, 4, 5, 6, 7, 8)

    def __init__(self, style: Style | None = None, augment: float = 0.3) -> None:
        if style is not None and style not in STYLES:
            raise ValueError(f"unknown frozenlake style {style!r}; use one of {', '.join(STYLES)}")
        self.style = style
        self.augment = augment

    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        """A solvable ``level`` x ``level`` lake, rendered in a sampled (or the forced) style."""
        self.check_level(level)
        lake = random_lake(rng, level)
        # Style and palette are always drawn so a forced style leaves every later draw unchanged.
        drawn = STYLES[int(rng.integers(len(STYLES)))]
        style: Style = self.style or drawn
        palette = sorted(PALETTES)[int(rng.integers(len(PALETTES)))]
        augment = sample_augment(rng, level, self.augment)
        cell = augment["cell"] or min(NATIVE_CELL, MAX_SIDE // level)
        image = apply_augment(render(lake.desc(), style, cell, palette), augment)
        plan = solve(lake)
        assert plan is not None  # random_lake only returns solvable lakes
        meta: dict[str, Any] = {
            "style": style,
            "cell": [cell, cell],
            "origin": [0, 0],
            "size": [int(image.shape[1]), int(image.shape[0])],
            "augment": augment,
        }
        if style == "vector":
            meta["palette"] = palette
        question = question_text(style, lake.rows, lake.cols)
        return Puzzle(self.name, level, index, question, format_plan(plan), image, lake.truth(), meta)

    def verify(self, puzzle: Puzzle, answer: str | None) -> bool:
        """Whether the plan in ``answer`` reaches the goal under VSP's rules (any safe plan counts)."""
        plan = parse_plan(answer)
        return plan is not None and simulate(Lake.from_truth(puzzle.truth), plan) == "goal"

    def expert(self, puzzle: Puzzle, *, reflective: bool = False, seed: int = 0) -> list[ExpertTurn]:
        """Box the player and goal, trace the path segment by segment, read the plan off the drawing."""
        lake = Lake.from_truth(puzzle.truth)
        geometry = Geometry.of(puzzle, lake)
        plan = solve(lake)
        if plan is None:
            raise ValueError(f"{puzzle.id}: the goal cannot be reached")
        runs = segments(lake.player, plan)
        boxes = (
            ToolCall("box", {"bbox": geometry.box(lake.player), "label": "player"}),
            ToolCall("box", {"bbox": geometry.box(lake.goal), "label": "goal"}),
        )
        turns = [ExpertTurn(_intro(lake) + " I box both.", boxes)]
        mistake = None
        if reflective:
            mistake = _pick_mistake(lake, runs, np.random.default_rng([seed, zlib.crc32(puzzle.id.encode())]))
        for group in _chunks(runs, MAX_SEGMENT_TURNS):
            turns += self._draw_group(lake, geometry, runs, group, mistake)
        final = f"The path reaches the goal at {_where(lake.goal)} in {len(plan)} moves: {','.join(plan)}."
        turns.append(ExpertTurn(final, answer=format_plan(plan)))
        return turns

    @staticmethod
    def _draw_group(
        lake: Lake, geometry: Geometry, runs: Sequence[Segment], group: Sequence[int], mistake: _Mistake | None
    ) -> list[ExpertTurn]:
        """One turn drawing these segments, each checked on the map; two if the mistake is among them."""
        if mistake is None or mistake.index not in group:
            calls = tuple(_line(geometry, runs[k], f"seg{k + 1}") for k in group)
            return [ExpertTurn(" ".join(_walk(lake, runs[k]) for k in group), calls)]
        cut = group.index(mistake.index)
        slip_calls = [_line(geometry, runs[k], f"seg{k + 1}") for k in group[:cut]]
        slip_calls.append(_line(geometry, mistake.wrong, f"seg{mistake.index + 1}"))
        slip = ExpertTurn(
            " ".join(_walk(lake, run) for run in [*(runs[k] for k in group[:cut]), mistake.wrong]), tuple(slip_calls)
        )
        rest = group[cut:]
        fix_calls = tuple(_line(geometry, runs[k], f"seg{k + 1}") for k in rest)
        fix = ExpertTurn(" ".join([mistake.notice, *(_walk(lake, runs[k]) for k in rest)]), fix_calls)
        return [slip, fix]


class ClassicFrozenLake(FrozenLake):
    """FrozenLake in VSP's own rendering only (classic gym sprites), still augmented.

    A small policy learns one look faster than three; the augmentations (cell size, colour jitter, JPEG)
    keep it from depending on VSP's exact pixels, so VSP's own maps stay a held-out test.
    """

    name: ClassVar[str] = "frozenlake-classic"

    def __init__(self, augment: float = 0.5) -> None:
        super().__init__(style="classic", augment=augment)
