"""A run's puzzle reaches the policy one way: ``puzzle=`` puts it in the run's state, and every turn's
``Conversation.puzzle`` hands it on (single, streamed, batched, sampled and checkpointed runs alike)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from recorded import EXPERT, MAZE

from sketchmind.agent import Agent
from sketchmind.models.base import Conversation, Generation, Sampling
from sketchmind.models.expert import ExpertPolicy
from sketchmind.models.replay import ReplayPolicy
from sketchmind.tasks import Puzzle, get_family, make_dataset


class Seeing(ReplayPolicy):
    """Replays the recorded turns and notes the puzzle each turn was handed, by run."""

    def __init__(self) -> None:
        super().__init__(EXPERT)
        self.seen: dict[str, list[Puzzle | None]] = {}

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.seen.setdefault(conversation.id, []).append(conversation.puzzle)
        return super().generate(conversation, sampling)


@pytest.fixture
def puzzle() -> Puzzle:
    return make_dataset(get_family("maze"), (2,), 1, seed=4)[0]


def test_every_way_into_a_run_hands_each_turn_its_puzzle(puzzle: Puzzle) -> None:
    policy = Seeing()
    agent = Agent(policy)
    agent.solve(MAZE, "q", run_id="solve", puzzle=puzzle)
    list(agent.stream(MAZE, "q", run_id="stream", puzzle=puzzle))
    agent.solve_batch([(MAZE, "q"), (MAZE, "q")], run_ids=["with", "without"], puzzles=[puzzle, None])
    agent.solve(MAZE, "q", samples=2, puzzle=puzzle)
    agent.solve(MAZE, "q", run_id="plain")
    turns = len(EXPERT)
    by_run = {run: seen for run, seen in policy.seen.items() if run not in ("plain", "without")}
    assert len(by_run) == 5  # solve, stream, one batched run, two samples
    assert all(seen == [puzzle] * turns for seen in by_run.values())
    assert policy.seen["plain"] == policy.seen["without"] == [None] * turns


def test_batched_puzzles_must_match_the_items(puzzle: Puzzle) -> None:
    with pytest.raises(ValueError, match="got 1 puzzles for 2 items"):
        Agent(Seeing()).solve_batch([(MAZE, "a"), (MAZE, "b")], puzzles=[puzzle])


def test_the_expert_has_no_side_door() -> None:
    assert not hasattr(ExpertPolicy, "assign")


def test_the_expert_plays_on_from_a_checkpoint_in_a_fresh_process(
    tmp_path: Path, puzzle: Puzzle, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "runs.sqlite"
    agent = Agent(ExpertPolicy(), checkpoint=database, interrupt_before_act=True)
    list(agent.stream(puzzle.image, puzzle.question, run_id="r1", puzzle=puzzle))
    # A fresh agent and expert, as after a restart: the puzzle comes back from the checkpoint alone.
    fresh = Agent(ExpertPolicy(), checkpoint=database, interrupt_before_act=True)
    with caplog.at_level(logging.WARNING):
        trace = fresh.resume("r1")
        while trace.status == "running":
            trace = fresh.resume("r1")
    assert trace.status == "answered" and get_family("maze").verify(puzzle, trace.answer)
    restored = fresh.state("r1").get("puzzle")
    assert restored is not None and restored.id == puzzle.id
    assert not [r for r in caplog.records if "unregistered type" in r.getMessage()]
