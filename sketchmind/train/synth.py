"""Cold-start SFT data: expert drawing trajectories run through the real agent, kept when they are right.

For every puzzle of ``make_dataset`` the family's expert plays its trajectory through ``Agent.solve_batch``,
so every view is rendered by the same canvas, protocol and budgets a model meets at inference. A thin
wrapper around the expert keeps the conversation each turn was written for; the last one plus the final
answer turn is the whole conversation. A kept trajectory becomes one row in TRL's VLM chat format::

    messages = [{"role": "system" | "user" | "assistant",
                 "content": [{"type": "text", "text": "..."} | {"type": "image"}, ...]}, ...]
    images   = [PIL RGB images, in the order the {"type": "image"} parts appear]

The whole pipeline is ``synthesize``; its parts have a module each:

- here, running the expert (``run_trajectories``) and choosing the reflective puzzles (``reflective_ids``);
- ``synth_filters``: which trajectories are kept (``reject_reason``, one of ``DROP_REASONS``);
- ``synth_rows``: a kept trajectory as a row (``to_row``), with exactly the messages ``HFPolicy`` hands the
  chat template at inference time, so SFT trains on the text the model later reads and writes;
- ``synth_stats``: what each filter removed, per family and level (``SynthStats``);
- ``synth_storage``: the rows as parquet shards with the images embedded, plus ``stats.json``
  (``save_dataset``, ``load_dataset``).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Conversation, Generation, Policy, Sampling
from sketchmind.models.expert import ExpertPolicy
from sketchmind.protocols import Protocol, get_protocol
from sketchmind.protocols.base import Message, text_part
from sketchmind.tasks import Puzzle, TaskFamily, get_family, make_dataset
from sketchmind.trace import Trace
from sketchmind.train.synth_filters import reject_reason
from sketchmind.train.synth_rows import to_row
from sketchmind.train.synth_stats import SynthStats


@dataclass(frozen=True)
class Trajectory:
    """One expert run: the trace, and the whole conversation when the run answered.

    ``trace`` is None when the family's expert could not plan the puzzle. ``conversation`` holds every
    message (the final answer turn included) and the views they reference.
    """

    puzzle: Puzzle
    reflective: bool
    trace: Trace | None
    conversation: Conversation | None


class ConversationRecorder(Policy):
    """Passes every turn to ``inner`` and keeps the conversation each run's latest turn was written for."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name
        self.coords = inner.coords
        self.protocol_name = inner.protocol_name
        self.seen: dict[str, Conversation] = {}

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.seen[conversation.id] = conversation
        return self.inner.generate(conversation, sampling)

    def generate_batch(
        self, conversations: Sequence[Conversation], sampling: Sampling = Sampling()
    ) -> list[Generation]:
        for conversation in conversations:
            self.seen[conversation.id] = conversation
        return self.inner.generate_batch(conversations, sampling)

    def release(self, conversation_id: str) -> None:
        self.inner.release(conversation_id)

    def whole_conversation(self, run_id: str, trace: Trace) -> Conversation | None:
        """The run's conversation with its final answer turn (as the agent appends it); forgets the run."""
        seen = self.seen.pop(run_id, None)
        if seen is None or trace.status != "answered" or not trace.steps:
            return None
        final: Message = {"role": "assistant", "content": [text_part(trace.steps[-1].raw)]}
        return Conversation(id=seen.id, messages=[*seen.messages, final], images=seen.images, tools=seen.tools)


def expert_seed(seed: int, puzzle: Puzzle) -> int:
    """The expert's seed for one puzzle: varies across puzzles, so reflective mistakes vary in kind."""
    return zlib.crc32(f"{seed}:{puzzle.id}".encode())


def reflective_ids(puzzles: Sequence[Puzzle], fraction: float, seed: int) -> set[str]:
    """The ids of ``round(fraction * len(puzzles))`` puzzles, drawn from ``seed`` (exact shares, even for few)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"reflective_fraction must be in [0, 1], not {fraction}")
    families = sorted({p.family for p in puzzles})
    rng = np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in families)])
    chosen = rng.permutation(len(puzzles))[: round(fraction * len(puzzles))]
    return {puzzles[int(i)].id for i in chosen}


def _text_protocol(protocol: str | Protocol) -> Protocol:
    resolved = get_protocol(protocol) if isinstance(protocol, str) else protocol
    if not isinstance(resolved.format_turn("", answer=""), str):
        # Native function calls (openai-tools) live in tool_calls and tool messages, not in chat text.
        raise ValueError(f"SFT data needs a text protocol (sketchmind, vilasr), not {resolved.name!r}")
    return resolved


def run_trajectories(
    family: TaskFamily,
    puzzles: Sequence[Puzzle],
    reflective: Collection[str] = (),
    *,
    protocol: str | Protocol = "sketchmind",
    seed: int = 0,
    max_turns: int = 10,
    batch_size: int = 32,
) -> list[Trajectory]:
    """Play the expert on every puzzle through the real agent, in lockstep batches; one result per puzzle, in order.

    ``reflective`` holds the ids of the puzzles that get a reflective trajectory (a drawn mistake that is
    noticed and redrawn). ``max_turns`` is the agent's turn budget, as at inference. Each run carries its
    puzzle, and the expert plans it with the puzzle's own family (``puzzle.family``, which is ``family``).
    """
    resolved = _text_protocol(protocol)
    ids = [p.id for p in puzzles]
    if len(set(ids)) != len(ids):
        raise ValueError("puzzle ids must be unique: they name the agent's runs")
    done: dict[str, Trajectory] = {}
    for flag in (False, True):  # the expert writes one kind of trajectory per policy
        group = [p for p in puzzles if (p.id in reflective) == flag]
        if not group:
            continue
        expert = ExpertPolicy(resolved, reflective=flag, seed=partial(expert_seed, seed))
        recorder = ConversationRecorder(expert)
        agent = Agent(recorder, resolved, Budgets(max_turns=max_turns, timeout=None))
        for start in range(0, len(group), batch_size):
            for trajectory in _run_batch(agent, recorder, expert, group[start : start + batch_size], flag):
                done[trajectory.puzzle.id] = trajectory
    return [done[i] for i in ids]


def _run_batch(
    agent: Agent,
    recorder: ConversationRecorder,
    expert: ExpertPolicy,
    puzzles: Sequence[Puzzle],
    reflective: bool,
) -> list[Trajectory]:
    planned: list[Puzzle] = []
    out: list[Trajectory] = []
    for puzzle in puzzles:
        try:
            # Planned before the batch (and kept for its run): one unplannable puzzle must not fail them all.
            expert.planned_turns(puzzle)
        except ValueError:  # the family cannot plan this puzzle: counted as expert_failed, not fatal
            out.append(Trajectory(puzzle, reflective, None, None))
            continue
        planned.append(puzzle)
    if planned:
        items = [(p.image, p.question) for p in planned]
        traces = agent.solve_batch(items, run_ids=[p.id for p in planned], puzzles=planned)
        for puzzle, trace in zip(planned, traces, strict=True):
            out.append(Trajectory(puzzle, reflective, trace, recorder.whole_conversation(puzzle.id, trace)))
    return out


def synthesize(
    families: Sequence[str],
    n: int,
    *,
    levels: Sequence[int] | None = None,
    seed: int = 0,
    reflective_fraction: float = 0.3,
    min_rounds: int = 2,
    protocol: str | Protocol = "sketchmind",
    max_turns: int = 10,
    batch_size: int = 32,
) -> tuple[list[dict[str, Any]], SynthStats]:
    """SFT rows from the expert on ``n`` puzzles per level of each family, and what the filters did.

    Args:
        families: family names (``sketchmind.tasks.FAMILY_NAMES``).
        n: puzzles per level (``make_dataset``); the same seed always gives the same rows.
        levels: the levels to make; None for every level of each family.
        reflective_fraction: the share of each family's puzzles solved with a reflective trajectory.
        min_rounds: the fewest tool-call rounds a kept trajectory has.
        protocol: the text protocol the rows are written in (``sketchmind`` or ``vilasr``).
        max_turns: the agent's turn budget, as at inference; longer trajectories are dropped as ``no_answer``.
        batch_size: puzzles per lockstep ``solve_batch``.
    """
    if len(set(families)) != len(families):
        raise ValueError(f"families repeat: {', '.join(families)}")
    resolved = _text_protocol(protocol)
    stats = SynthStats(
        config={
            "families": list(families),
            "n": n,
            "levels": list(levels) if levels is not None else None,
            "seed": seed,
            "reflective_fraction": reflective_fraction,
            "min_rounds": min_rounds,
            "protocol": resolved.name,
            "convention": resolved.convention.value,
            "max_turns": max_turns,
        }
    )
    rows: list[dict[str, Any]] = []
    for name in families:
        family = get_family(name)
        puzzles = make_dataset(family, levels if levels is not None else family.levels, n, seed)
        chosen = reflective_ids(puzzles, reflective_fraction, seed)
        for trajectory in run_trajectories(
            family, puzzles, chosen, protocol=resolved, seed=seed, max_turns=max_turns, batch_size=batch_size
        ):
            trace = trajectory.trace
            correct = trace is not None and family.verify(trajectory.puzzle, trace.answer)
            reason = reject_reason(trace, correct, min_rounds)
            row = to_row(trajectory, correct=correct) if reason is None else None
            stats.add(trajectory.puzzle.family, trajectory.puzzle.level, reason, row)
            if row is not None:
                rows.append(row)
    return rows, stats


__all__ = [
    "ConversationRecorder",
    "Trajectory",
    "expert_seed",
    "reflective_ids",
    "run_trajectories",
    "synthesize",
]
