"""Planning rows in both arms, and the guidance that points each written cell name at its image tokens."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from sketchmind.tasks import get_family
from sketchmind.tasks.base import make_dataset
from sketchmind.tasks.frozenlake import Lake
from sketchmind.tasks.frozenlake_search import search, search_view, states
from sketchmind.train.cell_guidance import cell_characters, cell_targets
from sketchmind.train.perception import token_cells
from sketchmind.train.search_rows import WORDINGS, draw_row, draw_turns, search_corpus, search_question, text_row

FAMILY = get_family("frozenlake-classic")


def _answer(row: dict) -> str:
    return str(row["messages"][-1]["content"][0]["text"])


def test_the_text_row_writes_the_whole_search_and_a_plan_the_verifier_accepts() -> None:
    for puzzle in make_dataset(FAMILY, [3, 6, 8], 2, seed=5):
        row = text_row(puzzle)
        lines = _answer(row).splitlines()
        lake = Lake.from_truth(puzzle.truth)
        assert lines[0].startswith("Find P ") and len(lines) == len(search(lake)) + 2
        assert FAMILY.verify(puzzle, lines[-1]) and len(row["images"]) == 1
        assert row["map"] == lake.desc()


def test_each_draw_turn_sees_only_the_latest_view_and_writes_one_line() -> None:
    puzzle = max(make_dataset(FAMILY, [5], 4, seed=7), key=lambda p: len(draw_turns(p)))
    lake = Lake.from_truth(puzzle.truth)
    turns = draw_turns(puzzle)
    after = states(lake.player, search(lake))
    assert len(turns) == len(after)  # one turn a line, then the plan
    assert turns[0][0] is None and turns[0][1].startswith("Find P ")
    assert all(text.startswith("Find G ") and text.count("\n") == 1 for _, text in turns[1:])
    assert FAMILY.verify(puzzle, turns[-1][1].splitlines()[-1])
    row = draw_row(puzzle, 2)
    assert len(row["images"]) == 1 and len(row["messages"]) == 2  # no history
    assert np.array_equal(np.asarray(row["images"][0]), search_view(puzzle, after[2]))
    assert draw_row(puzzle, -1)["id"].endswith(f"-t{len(turns) - 1}")


def test_every_open_size_is_asked_in_every_wording() -> None:
    for levels in ([3, 4], [3, 4, 5], [3, 4, 5, 6, 7, 8]):
        asked: dict[int, set[str]] = {level: set() for level in levels}
        for index in range(60):
            level = levels[index % len(levels)]  # the curriculum's pick (perception.Curriculum.level_for)
            puzzle = FAMILY.generate(np.random.default_rng(index), level, index)
            asked[level].add(search_question(puzzle).split()[0])
        assert all(len(words) == WORDINGS for words in asked.values()), asked  # the puzzle's own one of them


def test_cell_names_and_the_symbols_beside_them_are_the_guided_characters() -> None:
    text = "Find P 4,4, G 2,1.\n4,4 L: 4,3 F"
    guided = dict(cell_characters(text))
    assert guided[text.index("P")] == (3, 3) and guided[text.index("G")] == (1, 0)  # found at the name after
    assert guided[len(text) - 1] == (3, 2)  # what the search finds at the name before it
    assert {cell for _, cell in cell_characters("Action plan: L,U,U")} == set()
    assert [text[i] for i, _ in cell_characters(text)].count("L") == 0  # the move is the model's own decision


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sketchmind.models.tiny import build_tiny
    from sketchmind.train.perception import perception_corpus

    out = tmp_path_factory.mktemp("planner")
    corpus = itertools.chain(perception_corpus(100), search_corpus(100))
    return build_tiny("qwen2.5-vl", out, corpus=corpus, vocab_size=800, fixed_side=112)


def test_guidance_points_each_written_cell_at_its_own_image_tokens(planner: Path) -> None:
    from transformers import AutoProcessor

    from sketchmind.train.collator import AssistantOnlyCollator

    processor = AutoProcessor.from_pretrained(str(planner))
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    puzzles = make_dataset(FAMILY, [3, 4], 1, seed=2)
    rows = [text_row(puzzles[0]), draw_row(puzzles[1], 1)]
    batch = AssistantOnlyCollator(processor)(rows)
    targets = cell_targets(batch, [row["map"] for row in rows], tokenizer, image_id)
    assert len(targets.queries) == len(set(map(tuple, targets.queries.tolist())))
    assert bool((targets.mask.sum(1) >= 1).all())  # every guided cell owns image tokens
    for (row, position), mask in zip(targets.queries.tolist(), targets.mask, strict=True):
        assert batch["labels"][row, position + 1] != -100  # it predicts a token the model writes
        looked = mask.nonzero().flatten()
        assert bool((batch["input_ids"][row, looked] == image_id).all())
    # The draw row: the token before the symbol it reads (" F", " H" or " G") looks at the cell it reaches,
    # and the token before the goal's name looks at the goal: exactly those cells' image tokens.
    lake = Lake.from_truth(puzzles[1].truth)
    reached = search(lake)[1].cell
    labelled = (batch["labels"][1] != -100).nonzero().flatten().tolist()
    pieces = {p: tokenizer.decode([int(batch["input_ids"][1, p])]) for p in labelled}
    symbol_at = max(p for p in labelled if pieces[p].strip() in ("F", "H", "G"))
    goal_digit_at = next(p for p in labelled if pieces[p].strip().isdigit())  # "Find G 3,4.": the first digit
    first_image = int((batch["input_ids"][1] == image_id).nonzero()[0])
    rows, cols = token_cells(batch["image_grid_thw"][1], lake.rows)

    def looked_at(position: int) -> tuple[int, int]:
        k = [tuple(q) for q in targets.queries.tolist()].index((1, position - 1))
        tokens = targets.mask[k].nonzero().flatten() - first_image
        cells = {(int(rows[t // len(cols)]), int(cols[t % len(cols)])) for t in tokens.tolist()}
        assert len(cells) == 1
        (r, c) = cell = cells.pop()
        assert len(tokens) == int((rows == r).sum() * (cols == c).sum())  # all of that cell's tokens
        return cell

    assert looked_at(symbol_at) == reached and looked_at(goal_digit_at) == lake.goal
    assert not any(pieces[q + 1].strip() in ("U", "D", "L", "R") for b, q in targets.queries.tolist() if b == 1)
    merged = [(int(h) // 2) * (int(w) // 2) for _, h, w in batch["image_grid_thw"]]
    assert targets.classes.shape == (sum(merged),) and set(targets.classes.tolist()) <= {0, 1, 2, 3}
