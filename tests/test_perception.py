"""Reading rows: the transcription format, lazily generated training maps, and teacher-forced scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sketchmind.tasks import get_family
from sketchmind.tasks.base import make_dataset
from sketchmind.tasks.frozenlake import Lake
from sketchmind.train.perception import (
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
    data = reading_dataset("frozenlake-classic", [3, 5], n=6, seed=7)
    assert len(data) == 6 and data.column_names == ["level", "index"]  # nothing but specs is stored
    first, again = data[3], reading_dataset("frozenlake-classic", [3, 5], n=6, seed=7)[3]
    assert first["id"] == again["id"] == "read-frozenlake-classic-L5-3"
    assert np.array_equal(np.asarray(first["images"][0]), np.asarray(again["images"][0]))
    other = reading_dataset("frozenlake-classic", [3, 5], n=6, seed=8)[3]
    assert first["messages"][1] != other["messages"][1] or not np.array_equal(
        np.asarray(first["images"][0]), np.asarray(other["images"][0])
    )


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
