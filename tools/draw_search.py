"""The search of ``search_probe`` as draw turns: one tried move a turn, the path drawn in the next view.

In the one-image search the model keeps track of where the search stands in text: the cell a move leaves is
the last safe cell some lines above, and on 3x3-5x5 maps that bookkeeping stayed at 0.6-0.7 a decision. Here
every line is its own turn, and after it the environment shows the map again with the search drawn on it:

- the branch the search stands on, as a path from P, with a dot on its end (the current cell);
- every cell the search has ruled out (a hole it tried, a dead end it backed out of), crossed.

So which move to try next and which cell it reaches are reads of the latest view around the dot, the way the
symbols already are, and the plan at the end is the drawn path read off as moves. The turns are the same
lines, word for word, as the one-image search writes, so the two are scored the same way.
"""

from __future__ import annotations

import re
from typing import Any

import planning_probe

LINE = re.compile(r"^(?:\d+,\d+ )?([UDLR]): (\d+),(\d+) ([FHG])$")  # "4,4 L: 4,3 F" with --from-cell
BACK = re.compile(r"^Back to (\d+),(\d+)$")


def search_states(start: tuple[int, int], lines: list[str], lake: Any = None, by_cell: bool = False) -> list[Any]:
    """The search's state (``SearchState``) after each line, from the player at ``start``.

    The probe's lines may leave out the cell a move leaves (without ``--from-cell``); it is where the
    search stands. Raises ValueError for a line that is not a step of the search from there or whose move does
    not reach the cell it names (given ``lake``, also for a cell off the map or tried already). ``by_cell``:
    the cell a line names is the step, if it is next to where the search stands, whatever move it wrote.
    """
    from sketchmind.tasks.frozenlake import MOVES
    from sketchmind.tasks.frozenlake_search import SearchState, SearchStep

    state, out = SearchState((start,)), []
    for line in lines:
        if tried := LINE.match(line):
            reached = (int(tried[2]) - 1, int(tried[3]) - 1)
            move = tried[1]
            if by_cell:  # the move toward the named cell, if it is a neighbour
                delta = (reached[0] - state.current[0], reached[1] - state.current[1])
                move = next((m for m, d in MOVES.items() if d == delta), move)
            dr, dc = MOVES[move]
            if reached != (state.current[0] + dr, state.current[1] + dc):  # the move must reach the cell named
                raise ValueError(f"{move} from {state.current} does not reach {reached}")
            step = SearchStep(state.current, reached, move, tried[4])
        elif back := BACK.match(line):
            step = SearchStep(state.current, (int(back[1]) - 1, int(back[2]) - 1))
        else:
            raise ValueError(f"not a search line: {line!r}")
        state = state.after(step, lake)  # with the map: a cell on it, not tried yet
        out.append(state)
    return out


def views(puzzle: Any, lake: Any, lines: list[str]) -> list[Any]:
    """The map, then the view after each line of the search (the product's marks and renderer)."""
    from sketchmind.tasks.frozenlake_search import search_view

    return [puzzle.image] + [search_view(puzzle, state) for state in search_states(lake.player, lines)]


def draw_row(
    puzzle: Any, question: str, lines: list[str], reads: list[tuple[int, int]], path: list[str]
) -> tuple[dict[str, Any], list[str], list[tuple[int, int]], int]:
    """One multi-turn SFT row: the map and question, then one assistant turn a search line, each answered by a
    view with the search so far drawn; the last turn reads the plan off the drawn path.

    Returns the row, its assistant texts, the cell of every symbol they write (P, G, then the reads) and how
    many of those the search reads. ``lines``, ``reads`` and ``path`` are the search's (``search_lines``)."""
    import numpy as np
    from PIL import Image

    from sketchmind.tasks.frozenlake import Lake, format_plan

    lake = Lake.from_truth(puzzle.truth)
    ends = f"Find P {planning_probe.where(lake.player)}, G {planning_probe.where(lake.goal)}."
    turns = [f"{ends}\n{lines[0]}", *lines[1:], format_plan(path)]
    images = views(puzzle, lake, lines)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    for k, text in enumerate(turns):
        if k:
            messages.append({"role": "user", "content": [{"type": "image"}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    row = {"messages": messages, "images": [Image.fromarray(np.ascontiguousarray(i)) for i in images]}
    return row, turns, [lake.player, lake.goal, *reads], len(reads)


def markov_turns(puzzle: Any) -> list[tuple[Any, str, list[tuple[int, int]], int]]:
    """The package's draw turns that each stand alone (``search_rows.draw_turns``: the view, the turn's text),
    with the cells of the symbols each writes and how many of those the search reads, for this probe's
    guidance (the package writes the cell a move leaves, as ``--from-cell`` does)."""
    from sketchmind.tasks.frozenlake import Lake
    from sketchmind.tasks.frozenlake_search import search, search_view
    from sketchmind.train.search_rows import draw_turns

    lake = Lake.from_truth(puzzle.truth)
    tried = iter(step.cell for step in search(lake) if not step.is_back)
    turns: list[tuple[Any, str, list[tuple[int, int]], int]] = []
    for k, (state, text) in enumerate(draw_turns(puzzle)):
        ends = [lake.player, lake.goal] if k == 0 else [lake.goal]
        read = [next(tried)] if LINE.match(text.splitlines()[-1]) else []
        turns.append((search_view(puzzle, state), text, ends + read, len(read)))
    return turns


def figure(out: str, level: int = 5, index: int = 3) -> None:
    """The views of one map's draw-turn search side by side (the figure in docs/perception.md)."""
    import numpy as np
    from PIL import Image

    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import puzzle_rng
    from sketchmind.tasks.frozenlake import Lake

    planning_probe.CELLS["style"] = "coords"
    puzzle = get_family("frozenlake-classic").generate(puzzle_rng("x", 0, level, index), level, index)
    lake = Lake.from_truth(puzzle.truth)
    strip = Image.fromarray(np.concatenate(views(puzzle, lake, planning_probe.search(lake)[0]), axis=1))
    strip.resize((strip.width * 5 // 8, strip.height * 5 // 8), Image.LANCZOS).save(out, optimize=True)


if __name__ == "__main__":
    import sys

    figure(sys.argv[1])
