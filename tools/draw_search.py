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


def search_states(lake: Any, lines: list[str]) -> list[tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
    """After each line of the search: (the branch from P to the current cell, the cells ruled out)."""
    branch, ruled_out, states = [lake.player], [], []
    for line in lines:
        if tried := LINE.match(line):
            cell = (int(tried[2]) - 1, int(tried[3]) - 1)
            (ruled_out if tried[4] == "H" else branch).append(cell)
        elif back := BACK.match(line):
            ruled_out.append(branch.pop())
            if not branch or branch[-1] != (int(back[1]) - 1, int(back[2]) - 1):
                raise ValueError(f"the search does not stand next to that cell: {line!r}")
        else:
            raise ValueError(f"not a search line: {line!r}")
        states.append((list(branch), list(ruled_out)))
    return states


def view(puzzle: Any, lake: Any, branch: list[tuple[int, int]], ruled_out: list[tuple[int, int]]) -> Any:
    """The map with the search drawn on it, through the product's own marks and renderer."""
    import numpy as np

    from sketchmind.actions import Dot, Line, Path
    from sketchmind.render import draw_mark, get_style
    from sketchmind.tasks.frozenlake import Geometry

    geometry = Geometry.of(puzzle, lake)
    marks: list[Any] = []
    if len(branch) > 1:
        marks.append(Path(points=[geometry.centre(c) for c in branch], label="path"))
    marks.append(Dot(point=geometry.centre(branch[-1]), label="here"))
    for cell in ruled_out:
        x1, y1, x2, y2 = geometry.box(cell)
        marks += [Line(start=[x1, y1], end=[x2, y2], label="no"), Line(start=[x1, y2], end=[x2, y1], label="no")]
    image = np.array(puzzle.image, copy=True)
    style = get_style("sketchmind")
    for ordinal, mark in enumerate(marks):
        draw_mark(image, mark, style, ordinal, tag=False)
    return image


def views(puzzle: Any, lake: Any, lines: list[str]) -> list[Any]:
    """The map, then the view after each line of the search."""
    return [puzzle.image] + [view(puzzle, lake, *state) for state in search_states(lake, lines)]


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
