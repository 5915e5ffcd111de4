"""The no-drawing baselines' rows: the same expert trajectories, written as text CoT or as a bare answer."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sketchmind.agent import TEXT_PROMPT
from sketchmind.train.baselines import baseline_row
from sketchmind.train.synth import synthesize


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    got, _ = synthesize(["maze", "frozenlake"], 1, levels=None, seed=3)
    return got


def _texts(message: dict[str, Any]) -> str:
    return "".join(p.get("text") or "" for p in message["content"] if p.get("type") == "text")


def test_text_rows_keep_every_thought_in_order_and_no_tool(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        text = baseline_row(row, "text")
        system, question, assistant = text["messages"]
        assert _texts(system) == TEXT_PROMPT and question == row["messages"][1]
        assert len(text["images"]) == 1 and text["images"][0] is row["images"][0]
        said = _texts(assistant)
        assert "<tool_call>" not in said and said.count("<think>") == 1
        turns = [_texts(m) for m in row["messages"] if m["role"] == "assistant"]
        thoughts = [t.strip() for turn in turns for t in re.findall(r"<think>(.*?)</think>", turn, re.S)]
        assert said.startswith("<think>" + thoughts[0]) and thoughts[-1] in said
        assert said.endswith(f"<answer>{_answer(row)}</answer>")
        assert all(text[k] == row[k] for k in ("id", "family", "level", "answer", "reference"))
        assert (text["turns"], text["rounds"], text["n_images"]) == (1, 0, 1)


def _answer(row: dict[str, Any]) -> str:
    last = _texts([m for m in row["messages"] if m["role"] == "assistant"][-1])
    return re.findall(r"<answer>(.*?)</answer>", last, re.S)[-1].strip()


def test_direct_rows_are_the_answer_alone(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        direct = baseline_row(row, "direct")
        assert _texts(direct["messages"][-1]) == f"<answer>{_answer(row)}</answer>"
        assert len(direct["messages"]) == 3 and len(direct["images"]) == 1


def test_a_row_without_an_answer_or_an_unknown_baseline_is_refused(rows: list[dict[str, Any]]) -> None:
    cut = {**rows[0], "messages": rows[0]["messages"][:-1]}  # ends on an observation: no answer turn
    with pytest.raises(ValueError, match="gives no <answer>"):
        baseline_row(cut, "text")
    with pytest.raises(ValueError, match="unknown baseline 'draw'"):
        baseline_row(rows[0], "draw")  # type: ignore[arg-type]
