"""Planning rows: the frozen-lake search (``tasks.frozenlake_search``) as SFT rows, in two arms.

- **text**: one image, and the whole search written as words in one answer. The model keeps track of where
  the search stands in the text it has written::

      Find P 4,4, G 2,1.
      4,4 L: 4,3 F
      4,3 U: 3,3 F
      3,3 L: 3,2 H
      ...
      Action plan: L,U,U,L,L

- **draw**: one line a turn, and each turn stands alone: the model sees the latest view, the map with the
  search so far drawn on it (the branch as a path, a dot on its end, a cross on each cell ruled out), and
  writes where the goal is and the next line. The view holds the whole state of the search, so no history
  is sent, and the context is one image and a line whatever the map's size::

      Find G 2,1.
      4,3 U: 3,3 F

  The first turn, on the bare map, also says where P is; the last reads the plan off the drawn path.

Every row carries ``map`` (the map's rows of symbols), which the guidance losses read (``cell_guidance``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from sketchmind.tasks.base import Puzzle
from sketchmind.tasks.frozenlake import Lake, format_plan
from sketchmind.tasks.frozenlake_search import SearchState, cell_name, plan_of, search, search_view, states

Arm = Literal["text", "draw"]
ARMS: tuple[Arm, ...] = ("text", "draw")

# The same request in several wordings, one of them with the map size: users will not phrase it our way. The
# puzzle's own question (the family's: VSP's long prompt, with the size, a legend and the answer format) is one
# more (``OWN_QUESTION``): a model trained on the short ones alone solved none of 18 maps asked that way.
ASKS = (
    "Plan a path from P to G that steps on no H.",
    "Find a safe route for the player to the goal, avoiding the holes.",
    "How does the player reach the goal on this {rows}x{cols} lake without falling into a hole?",
)
OWN_QUESTION = len(ASKS)  # the wording number of the puzzle's own question
WORDINGS = len(ASKS) + 1


def search_question(puzzle: Puzzle, wording: int | None = None) -> str:
    """The planning request for ``puzzle``: wording ``0..WORDINGS-1`` (``OWN_QUESTION``: the puzzle's own), by
    default one picked by a hash of its level and index (never by ``index % k``, which the curriculum also uses
    to pick the level: docs/perception.md)."""
    k = zlib.crc32(f"{puzzle.level}:{puzzle.index}".encode()) % WORDINGS if wording is None else wording
    if k == OWN_QUESTION:
        return puzzle.question
    return ASKS[k].format(rows=puzzle.truth["rows"], cols=puzzle.truth["cols"])


def ends_line(lake: Lake, player: bool = True) -> str:
    """``Find P 4,4, G 2,1.``: where the search starts and heads (``Find G 2,1.`` without the player)."""
    goal = f"G {cell_name(lake.goal)}."
    return f"Find P {cell_name(lake.player)}, {goal}" if player else f"Find {goal}"


def search_text(lake: Lake) -> str:
    """The text arm's answer: the ends, every line of the search, the plan."""
    steps = search(lake)
    plan = plan_of(states(lake.player, steps)[-1])
    return "\n".join([ends_line(lake), *(step.text() for step in steps), format_plan(plan)])


def draw_turns(puzzle: Puzzle) -> list[tuple[SearchState | None, str]]:
    """The draw arm's turns: (the state the view shows, None for the bare map; what the model writes)."""
    lake = Lake.from_truth(puzzle.truth)
    steps = search(lake)
    after = states(lake.player, steps)
    lines = [step.text() for step in steps] + [format_plan(plan_of(after[-1]))]
    shown: list[SearchState | None] = [None, *after[1:]]
    pairs = enumerate(zip(shown, lines, strict=True))
    return [(state, f"{ends_line(lake, player=k == 0)}\n{line}") for k, (state, line) in pairs]


def _row(puzzle: Puzzle, image: np.ndarray, question: str, answer: str | None, suffix: str) -> dict[str, Any]:
    from PIL import Image

    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {
        "id": f"search-{puzzle.id}{suffix}",
        "messages": messages,
        "images": [Image.fromarray(np.ascontiguousarray(image))],
        "map": Lake.from_truth(puzzle.truth).desc(),
    }


def text_row(puzzle: Puzzle, wording: int | None = None) -> dict[str, Any]:
    """The text arm's row: the map, the request, the whole search and the plan."""
    assert puzzle.image is not None
    answer = search_text(Lake.from_truth(puzzle.truth))
    return _row(puzzle, puzzle.image, search_question(puzzle, wording), answer, "")


def draw_row(
    puzzle: Puzzle,
    turn: int,
    wording: int | None = None,
    turns: list[tuple[SearchState | None, str]] | None = None,
) -> dict[str, Any]:
    """The draw arm's row for one turn (negative counts from the end: -1 is the plan); ``turns`` are the
    puzzle's ``draw_turns`` when the caller has them already."""
    turns = draw_turns(puzzle) if turns is None else turns
    state, answer = turns[turn]
    view = search_view(puzzle, state)
    return _row(puzzle, view, search_question(puzzle, wording), answer, f"-t{turn % len(turns)}")


def search_row(puzzle: Puzzle, arm: Arm) -> dict[str, Any]:
    """One training row of ``arm`` for ``puzzle``; the draw arm takes one of its turns, picked by its index."""
    if arm == "text":
        return text_row(puzzle)
    turns = draw_turns(puzzle)
    pick = int(np.random.default_rng([puzzle.level, puzzle.index]).integers(len(turns)))
    return draw_row(puzzle, pick, turns=turns)


def search_corpus(n: int = 400, seed: int = 0) -> Iterator[str]:
    """Texts that cover the planning rows' vocabulary, for training a tiny tokenizer."""
    from sketchmind.tasks.frozenlake import random_lake

    rng = np.random.default_rng(seed)
    for k in range(n):
        lake = random_lake(rng, 3 + k % 6)
        yield search_text(lake)
        yield ASKS[k % len(ASKS)].format(rows=lake.rows, cols=lake.cols)
