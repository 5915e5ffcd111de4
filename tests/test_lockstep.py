"""Batched and single solves take one route: the graph is compiled from ``EDGES``, and ``solve_batch``
walks the same table with the same node functions, so the same model outputs give the same trace."""

from __future__ import annotations

from typing import Any

import pytest
from recorded import EXPERT, MAZE

from sketchmind.agent import EDGES, Agent, Budgets
from sketchmind.models.base import Conversation
from sketchmind.models.replay import ReplayPolicy
from sketchmind.trace import Trace

GARBAGE = ["I think it is left", '<tool_call>{"name": "box", "arguments": {"view": 9, "bbox": [1, 2, 3, 4]}}']
TIMINGS = ("seconds", "render_seconds")  # wall clock: what two runs of the same outputs may not share


class Counting(ReplayPolicy):
    """Replays the recorded turns and reports 1000 prompt tokens per message (for the context budget)."""

    def count_tokens(self, conversation: Conversation) -> int | None:
        return 1000 * len(conversation.messages)


CASES: dict[str, tuple[ReplayPolicy, Budgets]] = {
    "answers": (ReplayPolicy(EXPERT), Budgets()),
    "turn budget mid-trajectory": (ReplayPolicy(EXPERT), Budgets(max_turns=2)),
    "a single turn": (ReplayPolicy(EXPERT), Budgets(max_turns=1)),
    "image budget": (ReplayPolicy(EXPERT), Budgets(max_images=2)),
    "only errors": (ReplayPolicy(GARBAGE * 2), Budgets(max_turns=4)),
    "backend failure": (ReplayPolicy(EXPERT[:1]), Budgets()),
    # Checked before each model call: the batch used to skip it and answer past the budget.
    "context budget": (Counting(EXPERT), Budgets(max_context_tokens=4500)),
}


def comparable(trace: Trace) -> dict[str, Any]:
    """The trace without timings, its creation time and its run id."""
    data = trace.to_dict()
    data["steps"] = [{k: v for k, v in step.items() if k not in TIMINGS} for step in data["steps"]]
    data.pop("created")
    data["meta"].pop("run_id")
    return data


@pytest.mark.parametrize("case", CASES)
def test_batched_and_single_solves_give_the_same_trace(case: str) -> None:
    policy, budgets = CASES[case]
    single = Agent(policy, budgets=budgets).solve(MAZE, "Find a safe path.")
    [batched] = Agent(policy, budgets=budgets).solve_batch([(MAZE, "Find a safe path.")])
    assert comparable(batched) == comparable(single)


def test_the_context_budget_ends_a_batched_run_before_its_model_call() -> None:
    [trace] = Agent(Counting(EXPERT), budgets=Budgets(max_context_tokens=4500)).solve_batch([(MAZE, "q")])
    # System and question, then two messages a turn: the third call would read 6000 tokens.
    assert trace.status == "no_answer" and trace.error == "context budget spent (6000 > 4500 tokens)"
    assert len(trace.steps) == 2


def test_the_graph_is_compiled_from_the_edge_table() -> None:
    graph = Agent(ReplayPolicy(EXPERT)).graph.get_graph()
    compiled = {(e.source, e.target) for e in graph.edges if e.source != "__start__"}
    table = {
        (node, "__end__" if target == "end" else target) for node, (_, targets) in EDGES.items() for target in targets
    }
    assert compiled == table
