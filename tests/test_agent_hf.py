"""The agent end to end on real (tiny, random) transformers models of all three families."""

from __future__ import annotations

import pytest
from recorded import MAZE

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Sampling
from sketchmind.models.hf import HFPolicy
from sketchmind.models.tiny import build_tiny


@pytest.fixture(scope="module", params=["qwen2.5-vl", "qwen3-vl", "idefics3"])
def policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HFPolicy:
    return HFPolicy(build_tiny(request.param, tmp_path_factory.mktemp(request.param)))


def test_garbage_from_a_random_model_ends_as_no_answer_with_every_turn_recorded(policy: HFPolicy) -> None:
    agent = Agent(policy, budgets=Budgets(max_turns=3), sampling=Sampling(max_new_tokens=8))
    trace = agent.solve(MAZE, "Find a safe path.")
    assert trace.status == "no_answer" and trace.answer is None
    assert len(trace.steps) == 3 and all(step.errors for step in trace.steps)
    assert all(step.tokens_out and step.seconds for step in trace.steps)
    # Later turns prefill only what is new: the KV cache is reused across the agent's turns.
    assert trace.steps[1].tokens_in is not None and trace.steps[0].tokens_in is not None
    assert trace.steps[1].tokens_in < trace.steps[0].tokens_in
    # ... while the context grows turn by turn, and survives a save and load of the trace.
    contexts = [step.context or 0 for step in trace.steps]
    assert contexts == sorted(contexts) and contexts[1] > (trace.steps[1].tokens_in or 0)


def test_a_sliver_of_a_view_does_not_fail_the_batch(policy: HFPolicy) -> None:
    # A model may zoom into a 1-px-tall region; Qwen processors refuse images beyond 200:1, which used to
    # fail every row of a lockstep batch. fit_pixels pads such views, so each run just goes on.
    import numpy as np

    sliver = np.full((3, 1200, 3), 255, dtype=np.uint8)
    agent = Agent(policy, budgets=Budgets(max_turns=1), sampling=Sampling(max_new_tokens=4))
    traces = agent.solve_batch([(sliver, "What is here?"), (MAZE, "Find a safe path.")])
    assert [t.status for t in traces] == ["no_answer", "no_answer"]  # the budget ended them, not a model error
    assert all("turn budget" in (t.error or "") for t in traces)


def test_lockstep_batch_matches_single_runs(policy: HFPolicy) -> None:
    agent = Agent(policy, budgets=Budgets(max_turns=2), sampling=Sampling(max_new_tokens=6))
    single = [agent.solve(MAZE, q) for q in ("a", "b")]
    batched = agent.solve_batch([(MAZE, "a"), (MAZE, "b")])
    assert [[s.raw for s in t.steps] for t in batched] == [[s.raw for s in t.steps] for t in single]


def test_a_backend_call_over_the_timeout_ends_the_run_as_error(policy: HFPolicy) -> None:
    agent = Agent(policy, budgets=Budgets(timeout=1e-4), sampling=Sampling(max_new_tokens=64))
    trace = agent.solve(MAZE, "q")
    assert trace.status == "error" and trace.error is not None and "\n" not in trace.error
