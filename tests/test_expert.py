"""The expert policy: turns written in each protocol, coordinates converted, run through the real agent."""

from __future__ import annotations

import pytest

from sketchmind.agent import Agent
from sketchmind.models.base import BackendError, Conversation
from sketchmind.models.expert import ExpertPolicy, run_expert
from sketchmind.protocols import ToolCall, get_protocol
from sketchmind.tasks import get_family, make_dataset

CALLS = [
    ToolCall("box", {"bbox": [10, 20, 110, 120], "label": "goal", "view": 1}),
    ToolCall("line", {"start": [5, 5], "end": [60, 80], "label": "seg1", "view": 1}),
]


@pytest.mark.parametrize("name", ["sketchmind", "openai-tools", "vilasr"])
def test_format_turn_is_what_the_parser_reads_back(name: str) -> None:
    protocol = get_protocol(name)
    parsed = protocol.parse(protocol.format_turn("Box the goal, then draw the first leg.", CALLS))
    assert parsed.errors == [] and parsed.answer is None
    assert parsed.thought == "Box the goal, then draw the first leg."
    assert [(c.name, c.arguments) for c in parsed.calls] == [(c.name, c.arguments) for c in CALLS]
    final = protocol.parse(protocol.format_turn("R then U.", answer="Action plan: R,U"))
    assert final.answer == "Action plan: R,U" and final.calls == []


def test_vilasr_refuses_tools_it_does_not_have() -> None:
    with pytest.raises(ValueError, match="no zoom tool"):
        get_protocol("vilasr").format_turn("look", [ToolCall("zoom", {"factor": 2, "view": 1})])


def test_a_conversation_without_its_puzzle_is_a_clear_backend_error() -> None:
    policy = ExpertPolicy()
    with pytest.raises(BackendError, match="only runs that carry their puzzle"):
        policy.generate(Conversation(id="nobody", messages=[]))


@pytest.mark.parametrize("convention", ["pixels", "norm1000", "unit"])
def test_expert_coordinates_follow_the_protocol_convention(convention: str) -> None:
    family = get_family("maze")
    puzzle = make_dataset(family, (3,), 1, seed=5)[0]
    protocol = get_protocol("sketchmind", convention=convention)
    trace = run_expert(family, puzzle, protocol=protocol)
    assert trace.status == "answered" and family.verify(puzzle, trace.answer)
    assert all(not step.errors for step in trace.steps)
    first_box = next(c for s in trace.steps for c in s.calls if c["name"] == "box")
    limit = {"pixels": max(puzzle.image.shape), "norm1000": 1000, "unit": 1}[convention]  # type: ignore[union-attr]
    assert max(first_box["arguments"]["bbox"]) <= limit
    if convention == "unit":
        assert all(0 <= v <= 1 for v in first_box["arguments"]["bbox"])


def test_expert_text_mode_answers_in_one_turn_without_drawing() -> None:
    family = get_family("maze")
    puzzle = make_dataset(family, (2,), 1, seed=3)[0]
    trace = run_expert(family, puzzle, mode="text")
    assert len(trace.steps) == 1 and trace.steps[0].calls == []
    assert family.verify(puzzle, trace.answer)


def test_reflective_expert_redraws_a_label_and_still_answers() -> None:
    family = get_family("maze")
    for puzzle in make_dataset(family, (4,), 3, seed=1):
        trace = run_expert(family, puzzle, reflective=True)
        labels = [c["arguments"].get("label") for s in trace.steps for c in s.calls]
        assert any(labels.count(label) > 1 for label in labels if label)
        assert trace.status == "answered" and family.verify(puzzle, trace.answer)


def test_expert_drives_a_lockstep_batch() -> None:
    family = get_family("maze")
    puzzles = make_dataset(family, (1, 5), 2, seed=9)
    items = [(p.image, p.question) for p in puzzles]
    traces = Agent(ExpertPolicy()).solve_batch(items, run_ids=[p.id for p in puzzles], puzzles=puzzles)
    assert [family.verify(p, t.answer) for p, t in zip(puzzles, traces, strict=True)] == [True] * len(puzzles)
