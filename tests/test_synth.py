"""SFT data synthesis: rows in TRL's VLM chat format from expert runs, filters, storage, LLaMA-Factory export."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sketchmind.models.hf import HFPolicy
from sketchmind.protocols import get_protocol
from sketchmind.tasks import FAMILY_NAMES, Puzzle, get_family, make_dataset
from sketchmind.tasks.maze import Maze
from sketchmind.trace import Step, Trace
from sketchmind.train.export import IMAGE_TOKEN, dataset_info, export_llamafactory, sharegpt_messages
from sketchmind.train.synth import Trajectory, reflective_ids, run_trajectories, synthesize
from sketchmind.train.synth_filters import DROP_REASONS, redrawn_labels, reject_reason
from sketchmind.train.synth_rows import chat_messages, to_row
from sketchmind.train.synth_stats import SynthStats
from sketchmind.train.synth_storage import is_saved, load_dataset, load_stats, save_dataset

SEED = 3
LEVELS = (1, 2)
N = 2  # per level: 4 puzzles


@pytest.fixture(scope="module")
def puzzles() -> dict[str, Puzzle]:
    return {p.id: p for p in make_dataset(get_family("maze"), LEVELS, N, SEED)}


@pytest.fixture(scope="module")
def synth() -> tuple[list[dict[str, Any]], SynthStats]:
    return synthesize(["maze"], N, levels=LEVELS, seed=SEED, reflective_fraction=0.5)


@pytest.fixture(scope="module")
def trajectories(puzzles: dict[str, Puzzle]) -> list[Trajectory]:
    chosen = list(puzzles.values())
    return run_trajectories(get_family("maze"), chosen, reflective_ids(chosen, 0.5, SEED), seed=SEED)


def image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(part["type"] == "image" for message in messages for part in message["content"])


def without_none(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as stored in Arrow, with the ``None`` fields its shared struct schema adds dropped."""
    return [
        {"role": m["role"], "content": [{k: v for k, v in p.items() if v is not None} for p in m["content"]]}
        for m in messages
    ]


def test_rows_are_whole_conversations_with_one_image_per_placeholder(
    synth: tuple[list[dict[str, Any]], SynthStats], puzzles: dict[str, Puzzle]
) -> None:
    rows, stats = synth
    assert len(rows) == stats.kept == stats.total == 4
    for row in rows:
        messages = row["messages"]
        assert [m["role"] for m in messages[:3]] == ["system", "user", "assistant"]
        assert (
            messages[-1]["role"] == "assistant"
            and f"<answer>{row['answer']}</answer>" in messages[-1]["content"][0]["text"]
        )
        assert row["n_images"] == len(row["images"]) == image_parts(messages) >= 1 + row["rounds"]
        assert row["turns"] == sum(m["role"] == "assistant" for m in messages)
        assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in row["images"])
        puzzle = puzzles[row["id"]]
        assert messages[1]["content"][0] == {"type": "image"} and messages[1]["content"][1]["text"] == puzzle.question
        assert puzzle.image is not None and np.array_equal(np.asarray(row["images"][0]), puzzle.image)
        assert row["correct"] and row["reference"] == puzzle.answer and row["protocol"] == "sketchmind"


def test_assistant_turns_parse_back_to_the_recorded_calls(trajectories: list[Trajectory]) -> None:
    protocol = get_protocol("sketchmind")
    for trajectory in trajectories:
        assert trajectory.trace is not None
        row = to_row(trajectory, correct=True)
        turns = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
        assert turns == [step.raw for step in trajectory.trace.steps]
        for text, step in zip(turns, trajectory.trace.steps, strict=True):
            parsed = protocol.parse(text)
            assert [(c.name, c.arguments) for c in parsed.calls] == [(c["name"], c["arguments"]) for c in step.calls]
        assert protocol.parse(turns[-1]).answer == trajectory.trace.answer


def test_messages_are_exactly_what_the_hf_backend_renders(trajectories: list[Trajectory]) -> None:
    captured: list[Any] = []

    def apply_chat_template(messages: list[dict[str, Any]], **_: Any) -> str:
        captured.append(messages)
        return ""

    template = SimpleNamespace(chat_template="stub", apply_chat_template=apply_chat_template)
    for trajectory in trajectories:
        assert trajectory.conversation is not None
        _, arrays = HFPolicy._render(SimpleNamespace(_processor=template, _tok=template), trajectory.conversation)  # type: ignore[arg-type]
        messages, images = chat_messages(trajectory.conversation)
        assert captured.pop() == messages
        assert len(arrays) == len(images) and all(a is b for a, b in zip(arrays, images, strict=True))


def test_reflective_rows_redraw_a_label(
    trajectories: list[Trajectory], synth: tuple[list[dict[str, Any]], SynthStats]
) -> None:
    rows, stats = synth
    assert sum(row["reflective"] for row in rows) == 2 and stats.reflective_share == 0.5
    assert {t.puzzle.id for t in trajectories if t.reflective} == {row["id"] for row in rows if row["reflective"]}
    for trajectory in trajectories:
        assert trajectory.trace is not None
        assert bool(redrawn_labels(trajectory.trace)) == trajectory.reflective


def trace(*steps: Step, status: str = "answered") -> Trace:
    return Trace(question="q", protocol="sketchmind", model="test", steps=list(steps), answer="2", status=status)  # type: ignore[arg-type]


BOX: dict[str, Any] = {"name": "box", "arguments": {"bbox": [1, 1, 9, 9], "label": "a"}, "group": 0}


def test_filters_name_the_first_reason_a_trajectory_fails() -> None:
    good = trace(Step(1, calls=[BOX]), Step(2, calls=[BOX]), Step(3))
    assert reject_reason(good, True) is None
    assert reject_reason(None, True) == "expert_failed"
    assert reject_reason(trace(Step(1), status="error"), True) == "expert_failed"
    assert reject_reason(trace(Step(1, calls=[BOX]), status="no_answer"), True) == "no_answer"
    assert reject_reason(good, False) == "wrong_answer"
    invalid = trace(Step(1, calls=[BOX]), Step(2, calls=[BOX], errors=["bbox is off the view"]), Step(3))
    assert reject_reason(invalid, True) == "invalid_action"
    assert reject_reason(trace(Step(1, calls=[BOX]), Step(2)), True) == "few_rounds"
    assert reject_reason(trace(Step(1, calls=[BOX]), Step(2)), True, min_rounds=1) is None
    moved = {**BOX, "arguments": {"bbox": [2, 2, 9, 9], "label": "a"}}
    assert (
        redrawn_labels(
            trace(Step(1, calls=[BOX]), Step(2, calls=[{**BOX, "arguments": {**BOX["arguments"], "view": 2}}]))
        )
        == []
    )
    assert redrawn_labels(trace(Step(1, calls=[BOX]), Step(2, calls=[moved]))) == ["a"]


def test_synthesis_counts_what_each_filter_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    rows, stats = synthesize(["maze"], 1, levels=LEVELS, seed=SEED, min_rounds=99)
    assert rows == [] and stats.dropped["few_rounds"] == stats.total == 2 and stats.kept == 0
    monkeypatch.setattr(Maze, "verify", lambda self, puzzle, answer: False)
    rows, stats = synthesize(["maze"], 1, levels=LEVELS, seed=SEED)
    assert rows == [] and stats.dropped == {**dict.fromkeys(DROP_REASONS, 0), "wrong_answer": 2}
    assert [(g.family, g.level, g.total) for g in stats.groups] == [("maze", 1, 1), ("maze", 2, 1)]
    assert "| **all** |  | 2 | 0 | 0 | 0 | 2 | 0 | 0 |" in stats.table()


def test_text_protocols_only() -> None:
    with pytest.raises(ValueError, match="text protocol"):
        synthesize(["maze"], 1, levels=(1,), protocol="openai-tools")


def test_same_seed_same_rows(synth: tuple[list[dict[str, Any]], SynthStats]) -> None:
    again, stats = synthesize(["maze"], N, levels=LEVELS, seed=SEED, reflective_fraction=0.5)
    rows, first = synth
    assert stats.to_dict() == first.to_dict()
    for a, b in zip(rows, again, strict=True):
        assert {k: v for k, v in a.items() if k != "images"} == {k: v for k, v in b.items() if k != "images"}
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a["images"], b["images"], strict=True))


def test_save_and_load_keep_messages_and_pixels(synth: tuple[list[dict[str, Any]], SynthStats], tmp_path: Path) -> None:
    rows, stats = synth
    save_dataset(rows, tmp_path, stats=stats, rows_per_shard=3)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    loaded = load_dataset(tmp_path)
    assert len(loaded) == len(rows)
    for row, back in zip(rows, loaded, strict=True):
        assert without_none(back["messages"]) == row["messages"]
        assert {k: back[k] for k in ("id", "level", "answer", "reflective", "n_images")} == {
            k: row[k] for k in ("id", "level", "answer", "reflective", "n_images")
        }
        assert all(
            np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(row["images"], back["images"], strict=True)
        )
    assert load_stats(tmp_path).to_dict() == stats.to_dict()
    assert json.loads((tmp_path / "stats.json").read_text())["kept"] == 4
    save_dataset(rows[:1], tmp_path)  # a smaller re-save replaces the old shards
    assert len(load_dataset(tmp_path)) == 1
    assert not is_saved(tmp_path / "never") and is_saved(save_dataset([], tmp_path / "empty"))  # no rows: still saved
    assert len(load_dataset(tmp_path / "empty")) == 0


def test_llamafactory_export_has_one_file_per_placeholder(
    synth: tuple[list[dict[str, Any]], SynthStats], tmp_path: Path
) -> None:
    rows, _ = synth
    save_dataset(rows, tmp_path / "hf")
    for source in (rows, load_dataset(tmp_path / "hf")):
        out = export_llamafactory(source, tmp_path / "lf")
        records = json.loads((out / "data.json").read_text())
        assert len(records) == len(rows)
        for record, row in zip(records, rows, strict=True):
            assert [m["role"] for m in record["messages"]][:3] == ["system", "user", "assistant"]
            assert (
                sum(m["content"].count(IMAGE_TOKEN) for m in record["messages"])
                == len(record["images"])
                == row["n_images"]
            )
            assert record["messages"][1]["content"] == IMAGE_TOKEN + row["question"]
            for path, image in zip(record["images"], row["images"], strict=True):
                assert np.array_equal(np.asarray(Image.open(out / path).convert("RGB")), np.asarray(image))
        assert json.loads((out / "dataset_info.json").read_text()) == dataset_info()
    with pytest.raises(ValueError, match="alternate"):
        sharegpt_messages([{"role": "user", "content": [{"type": "text", "text": "a"}]}] * 2)


@pytest.mark.parametrize("name", [f for f in FAMILY_NAMES if f != "maze"])
def test_other_families_make_rows(name: str) -> None:
    try:
        family = get_family(name)
    except ImportError:
        pytest.skip(f"{name} is not importable yet")
    rows, stats = synthesize([name], 1, levels=family.levels[:1], seed=SEED, reflective_fraction=1.0)
    assert stats.total == 1 and len(rows) == stats.kept
    for row in rows:
        assert row["n_images"] == image_parts(row["messages"]) and row["reflective"]
