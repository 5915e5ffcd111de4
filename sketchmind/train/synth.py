"""Cold-start SFT data: expert drawing trajectories run through the real agent, kept when they are right.

For every puzzle of ``make_dataset`` the family's expert plays its trajectory through ``Agent.solve_batch``,
so every view is rendered by the same canvas, protocol and budgets a model meets at inference. A thin
wrapper around the expert keeps the conversation each turn was written for; the last one plus the final
answer turn is the whole conversation. A kept trajectory becomes one row in TRL's VLM chat format::

    messages = [{"role": "system" | "user" | "assistant",
                 "content": [{"type": "text", "text": "..."} | {"type": "image"}, ...]}, ...]
    images   = [PIL RGB images, in the order the {"type": "image"} parts appear]

These are exactly the messages ``HFPolicy`` hands the chat template at inference time (text parts and
bare image parts), so SFT trains on the text the model later reads and writes. As in ViLaSR, a trajectory
is kept only if its answer verifies, none of its actions failed, and it drew in at least ``min_rounds``
turns; ``SynthStats`` counts what each filter removed.

Saved datasets are parquet shards with the images embedded (``data/train-NNNNN-of-NNNNN.parquet``) plus
``stats.json``; ``load_dataset`` reads them back as a ``datasets.Dataset``. Stored image parts carry
``"text": None`` (Arrow structs share one schema); TRL drops such ``None`` fields before templating.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Conversation, Generation, Policy, Sampling
from sketchmind.models.chat import template_messages, view_images
from sketchmind.models.expert import ExpertPolicy
from sketchmind.protocols import Protocol, get_protocol
from sketchmind.protocols.base import Message, text_part
from sketchmind.tasks import Puzzle, TaskFamily, get_family, make_dataset
from sketchmind.trace import Trace
from sketchmind.train.synth_storage import features, load_dataset, load_stats, save_dataset

DROP_REASONS: tuple[str, ...] = ("expert_failed", "no_answer", "wrong_answer", "invalid_action", "few_rounds")
CHAT_ROLES = frozenset({"system", "user", "assistant"})
COLUMNS: tuple[str, ...] = (
    "id",
    "family",
    "level",
    "protocol",
    "question",
    "reference",
    "answer",
    "correct",
    "reflective",
    "turns",
    "rounds",
    "n_images",
    "messages",
    "images",
)
_NOT_SHAPE = frozenset({"label", "view"})  # a mark repeated on a later view with the same label is no redraw


# ---------------------------------------------------------------------------------------------------------------------
# Running the expert


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


# ---------------------------------------------------------------------------------------------------------------------
# Rows and filters


def chat_messages(conversation: Conversation) -> tuple[list[Message], list[np.ndarray]]:
    """The messages as ``HFPolicy._render`` hands them to the chat template, and the images in that order.

    Only plain chat text and images can be stored (no tool messages or native tool calls): anything
    else is a ``ValueError``.
    """
    for message in conversation.messages:
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES or not isinstance(content, list) or set(message) - {"role", "content"}:
            raise ValueError(f"a {role!r} message with keys {sorted(message)} is not plain chat text and images")
    messages, _ = template_messages(conversation.messages)
    return messages, view_images(conversation.messages, conversation.images)


def rounds(trace: Trace) -> int:
    """Tool-call rounds: the turns that called at least one tool."""
    return sum(1 for step in trace.steps if step.calls)


def redrawn_labels(trace: Trace) -> list[str]:
    """Labels drawn again as a different mark (another tool or other arguments, the view aside), in order."""
    first: dict[str, dict[str, Any]] = {}
    redrawn: list[str] = []
    for step in trace.steps:
        for call in step.calls:
            arguments = call.get("arguments") or {}
            label = arguments.get("label")
            if not isinstance(label, str) or not label:
                continue
            mark = {"tool": call.get("name"), **{k: v for k, v in arguments.items() if k not in _NOT_SHAPE}}
            if label not in first:
                first[label] = mark
            elif mark != first[label] and label not in redrawn:
                redrawn.append(label)
    return redrawn


def reject_reason(trace: Trace | None, correct: bool, min_rounds: int = 2) -> str | None:
    """Why a trajectory is not training data (the first of ``DROP_REASONS`` that applies), or None to keep it."""
    if trace is None or trace.status == "error":
        return "expert_failed"
    if trace.status != "answered":
        return "no_answer"
    if not correct:
        return "wrong_answer"
    if any(step.errors for step in trace.steps):
        return "invalid_action"
    if rounds(trace) < min_rounds:
        return "few_rounds"
    return None


def to_row(trajectory: Trajectory, *, correct: bool) -> dict[str, Any]:
    """One dataset row (see ``COLUMNS``) for a trajectory that answered."""
    trace, conversation, puzzle = trajectory.trace, trajectory.conversation, trajectory.puzzle
    if trace is None or conversation is None:
        raise ValueError(f"{puzzle.id}: only a trajectory that answered makes a row")
    messages, arrays = chat_messages(conversation)
    return {
        "id": puzzle.id,
        "family": puzzle.family,
        "level": puzzle.level,
        "protocol": trace.protocol,
        "question": puzzle.question,
        "reference": puzzle.answer,
        "answer": trace.answer or "",
        "correct": correct,
        "reflective": trajectory.reflective,
        "turns": len(trace.steps),
        "rounds": rounds(trace),
        "n_images": len(arrays),
        "messages": messages,
        "images": [_pil(array) for array in arrays],
    }


def _pil(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(array))
    return image if image.mode == "RGB" else image.convert("RGB")


# ---------------------------------------------------------------------------------------------------------------------
# Statistics


@dataclass
class GroupStats:
    """Counts for one family and level; ``turns``, ``images`` and ``reflective`` sum over kept rows."""

    family: str
    level: int
    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    turns: int = 0
    images: int = 0
    reflective: int = 0

    def add(self, reason: str | None, row: Mapping[str, Any] | None = None) -> None:
        """Count one trajectory: dropped for ``reason``, or kept as ``row``."""
        self.total += 1
        if reason is not None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            return
        if row is None:
            raise ValueError("a kept trajectory needs its row")
        self.kept += 1
        self.turns += int(row["turns"])
        self.images += int(row["n_images"])
        self.reflective += bool(row["reflective"])


@dataclass
class SynthStats:
    """What a synthesis run made: per family and level, and in total. ``table()`` renders it as Markdown."""

    groups: list[GroupStats] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def add(self, family: str, level: int, reason: str | None, row: Mapping[str, Any] | None = None) -> None:
        """Count one trajectory of ``family`` at ``level``."""
        group = next((g for g in self.groups if (g.family, g.level) == (family, level)), None)
        if group is None:
            group = GroupStats(family, level)
            self.groups.append(group)
        group.add(reason, row)

    @property
    def total(self) -> int:
        return sum(g.total for g in self.groups)

    @property
    def kept(self) -> int:
        return sum(g.kept for g in self.groups)

    @property
    def dropped(self) -> dict[str, int]:
        """Trajectories removed by each filter (every reason listed, zeros included)."""
        counts = dict.fromkeys(DROP_REASONS, 0)
        for group in self.groups:
            for reason, count in group.dropped.items():
                counts[reason] = counts.get(reason, 0) + count
        return counts

    @property
    def mean_turns(self) -> float:
        """Assistant turns per kept row."""
        return _mean(self._sum("turns"), self.kept)

    @property
    def mean_images(self) -> float:
        """Images per kept row (the input included)."""
        return _mean(self._sum("images"), self.kept)

    @property
    def reflective_share(self) -> float:
        """The share of kept rows with a reflective trajectory."""
        return _mean(self._sum("reflective"), self.kept)

    def _sum(self, key: str) -> int:
        return sum(int(getattr(group, key)) for group in self.groups)

    def table(self) -> str:
        """One Markdown row per family and level, then the totals."""
        reasons = list(self.dropped)
        head = ["family", "level", "puzzles", "kept", *(r.replace("_", " ") for r in reasons)]
        head += ["turns", "images", "reflective"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in self.groups:
            cells = [g.family, str(g.level), str(g.total), str(g.kept), *(str(g.dropped.get(r, 0)) for r in reasons)]
            cells += _means(g.turns, g.images, g.reflective, g.kept)
            lines.append("| " + " | ".join(cells) + " |")
        totals = ["**all**", "", str(self.total), str(self.kept), *(str(self.dropped[r]) for r in reasons)]
        totals += _means(self._sum("turns"), self._sum("images"), self._sum("reflective"), self.kept)
        lines.append("| " + " | ".join(totals) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the groups and config, plus the totals for people reading ``stats.json``."""
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": self.dropped,
            "mean_turns": round(self.mean_turns, 4),
            "mean_images": round(self.mean_images, 4),
            "reflective_share": round(self.reflective_share, 4),
            "groups": [asdict(g) for g in self.groups],
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SynthStats:
        """Read ``to_dict`` output back (the totals are recomputed from the groups)."""
        return cls(groups=[GroupStats(**g) for g in data.get("groups", [])], config=dict(data.get("config", {})))

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> SynthStats:
        """Stats of rows alone (all kept; nothing known about what was dropped)."""
        stats = cls()
        for row in rows:
            stats.add(str(row["family"]), int(row["level"]), None, row)
        return stats


def _mean(total: float, count: int) -> float:
    return total / count if count else 0.0


def _means(turns: int, images: int, reflective: int, kept: int) -> list[str]:
    return [f"{_mean(turns, kept):.1f}", f"{_mean(images, kept):.1f}", f"{100 * _mean(reflective, kept):.0f}%"]


# ---------------------------------------------------------------------------------------------------------------------
# Synthesis


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
    "COLUMNS",
    "DROP_REASONS",
    "GroupStats",
    "SynthStats",
    "Trajectory",
    "chat_messages",
    "features",
    "load_dataset",
    "load_stats",
    "redrawn_labels",
    "reflective_ids",
    "reject_reason",
    "rounds",
    "run_trajectories",
    "save_dataset",
    "synthesize",
    "to_row",
]
