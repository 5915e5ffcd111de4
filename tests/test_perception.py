"""Reading rows: the transcription format, lazily generated training maps, and teacher-forced scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sketchmind.tasks import get_family
from sketchmind.tasks.base import make_dataset
from sketchmind.tasks.frozenlake import Lake
from sketchmind.train.perception import (
    Curriculum,
    cell_token_ids,
    perception_corpus,
    perception_row,
    read_transcription,
    reading_dataset,
    summarise_reading,
    teacher_forced,
    transcription,
)

LAKE = Lake(3, 4, player=(0, 0), goal=(2, 3), holes=frozenset({(0, 3), (1, 1)}))


def test_transcription_is_one_symbol_per_cell_and_reads_back() -> None:
    text = transcription(LAKE)
    assert text == "Row 1: P F F H\nRow 2: F H F F\nRow 3: F F F G"
    assert read_transcription(text) == [list("PFFH"), list("FHFF"), list("FFFG")]
    assert read_transcription("I think:\nRow 1: P F\nnot a row") == [["P", "F"]]


def test_reading_rows_hold_the_image_and_the_map() -> None:
    puzzle = make_dataset(get_family("frozenlake-classic"), [4], 1, seed=5)[0]
    row = perception_row(puzzle)
    user, assistant = row["messages"]
    assert user["content"][0] == {"type": "image"} and "P" in user["content"][1]["text"]
    assert read_transcription(assistant["content"][0]["text"]) == [list(r.replace("S", "P")) for r in _desc(puzzle)]
    assert np.array_equal(np.asarray(row["images"][0]), puzzle.image)


def _desc(puzzle: object) -> list[str]:
    return Lake.from_truth(puzzle.truth).desc()  # type: ignore[attr-defined]


def test_training_maps_are_made_on_demand_and_the_same_every_time() -> None:
    curriculum = Curriculum([3, 5])
    data = reading_dataset("frozenlake-classic", curriculum, n=6, seed=7)
    assert len(data) == 6 and data.column_names == ["index"]  # nothing but indices is stored
    assert data[3]["id"] == "read-frozenlake-classic-L3-3"  # only the first level is open
    curriculum.widen()
    first = data[3]
    again = reading_dataset("frozenlake-classic", Curriculum([3, 5], unlocked=2), n=6, seed=7)[3]
    assert first["id"] == again["id"] == "read-frozenlake-classic-L5-3"
    assert np.array_equal(np.asarray(first["images"][0]), np.asarray(again["images"][0]))
    other = reading_dataset("frozenlake-classic", Curriculum([3, 5], unlocked=2), n=6, seed=8)[3]
    assert first["messages"][1] != other["messages"][1]
    assert not curriculum.widen() and curriculum.current() == [3, 5]


@pytest.mark.parametrize("open_levels", [2, 3, 6])
def test_the_wording_says_nothing_about_the_map_size(open_levels: int) -> None:
    """Every open size is asked in every wording, in near-equal shares, however many sizes are open.

    The curriculum picks a row's size by its index; a wording picked by ``index % 3`` as well gave each size a
    wording of its own once three were open, and the model read the size off the question, not the image.
    """
    levels = [3, 4, 5, 6, 7, 8][:open_levels]
    curriculum = Curriculum(levels, unlocked=open_levels)
    data = reading_dataset("frozenlake-classic", curriculum, n=60 * open_levels, seed=3)
    asks: dict[int, list[str]] = {}
    for k in range(len(data)):
        user = data[k]["messages"][0]["content"][1]["text"]
        asks.setdefault(curriculum.level_for(k), []).append(user.split(" ")[0])  # the wording's first word
    for level, firsts in asks.items():
        shares = {word: firsts.count(word) / len(firsts) for word in set(firsts)}
        assert len(shares) == 3 and min(shares.values()) > 0.15, (level, shares)


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sketchmind.models.tiny import build_tiny

    out = tmp_path_factory.mktemp("reader")
    return build_tiny("qwen2.5-vl", out, corpus=perception_corpus(), vocab_size=600, max_pixels=112 * 112)


def test_every_cell_symbol_is_one_token_and_scoring_counts_cells(reader: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from sketchmind.train.collator import AssistantOnlyCollator

    processor = AutoProcessor.from_pretrained(str(reader))
    assert len(set(cell_token_ids(processor.tokenizer))) == 4
    model = AutoModelForImageTextToText.from_pretrained(str(reader), use_safetensors=True)
    puzzles = make_dataset(get_family("frozenlake-classic"), [3, 4], 2, seed=1)
    results = teacher_forced(model, AssistantOnlyCollator(processor), [perception_row(p) for p in puzzles], 3)
    assert [r["cells"] for r in results] == [9, 9, 16, 16]  # every cell is scored, the last of each row too
    summary = summarise_reading(results)
    assert summary["n"] == 4 and 0.0 <= summary["cell"] <= 1.0
    perfect = summarise_reading([{"right": 9, "cells": 9, "player": 1, "goal": 1}])
    assert perfect == {"n": 1, "cell": 1.0, "exact": 1.0, "player": 1.0, "goal": 1.0}


def test_guidance_targets_point_each_cell_at_its_own_image_tokens(reader: Path) -> None:
    import torch
    from transformers import AutoProcessor

    from sketchmind.train.collator import AssistantOnlyCollator
    from sketchmind.train.perception import reading_targets

    processor = AutoProcessor.from_pretrained(str(reader))
    puzzles = make_dataset(get_family("frozenlake-classic"), [3, 4], 1, seed=2)
    batch = AssistantOnlyCollator(processor)([perception_row(p) for p in puzzles])
    cells = cell_token_ids(processor.tokenizer)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    targets = reading_targets(batch, cells, image_id)
    assert targets.queries.shape == (9 + 16, 2) and targets.mask.shape[0] == 25
    # every cell owns at least one image token, and each image token belongs to exactly one cell
    assert bool((targets.mask.sum(1) >= 1).all())
    for row in range(2):
        owned = targets.mask[targets.queries[:, 0] == row].sum(0)
        assert torch.equal(owned[owned > 0], torch.ones(int((batch["input_ids"][row] == image_id).sum())))
    # the query is the token right before its cell's symbol, and the token classes follow the map
    for (row, position), label in zip(
        targets.queries.tolist(), [c for r in range(2) for c in _cells(batch, r, cells)], strict=True
    ):
        assert int(batch["labels"][row, position + 1]) == label
    merged = [(int(h) // 2) * (int(w) // 2) for _, h, w in batch["image_grid_thw"]]
    assert targets.classes.shape == (sum(merged),)
    assert set(targets.classes.tolist()) <= {0, 1, 2, 3} and (targets.classes == 0).any()  # the player is seen


def _cells(batch: dict, row: int, cells: list[int]) -> list[int]:
    return [int(t) for t in batch["labels"][row] if int(t) in cells]
