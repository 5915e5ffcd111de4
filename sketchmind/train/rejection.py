"""Stage 2: reflective rejection sampling. Sample k trajectories per puzzle, keep the good reflective ones.

The stage-1 policy solves fresh puzzles ``k`` times each with temperature sampling, through the batched
agent (so the trajectories are exactly what inference produces). A sample is *kept* for the next SFT
round when its answer verifies, none of its actions failed, and it is reflective: some label is drawn
again later with different geometry, i.e. the policy noticed a mistake and fixed it (ViLaSR's stage 2).
Every other answered sample is kept as well, in ``rejected``, so correct/incorrect pairs can feed DPO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Policy, Sampling
from sketchmind.tasks import Puzzle, get_family, make_dataset
from sketchmind.trace import Trace
from sketchmind.train.synth import ConversationRecorder, Trajectory
from sketchmind.train.synth_filters import redrawn_labels
from sketchmind.train.synth_rows import to_row

VERDICTS = ("kept", "not_reflective", "wrong_answer", "invalid_action", "no_answer", "backend_error")


def verdict(trace: Trace, correct: bool, *, require_reflective: bool = True) -> str:
    """Which of ``VERDICTS`` a sampled trajectory gets (the first that applies)."""
    if trace.status == "error":
        return "backend_error"
    if trace.status != "answered":
        return "no_answer"
    if any(step.errors for step in trace.steps):
        return "invalid_action"
    if not correct:
        return "wrong_answer"
    if require_reflective and not redrawn_labels(trace):
        return "not_reflective"
    return "kept"


@dataclass
class RejectionStats:
    """How many samples got each verdict, per family."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, family: str, outcome: str) -> None:
        row = self.counts.setdefault(family, dict.fromkeys(VERDICTS, 0))
        row[outcome] += 1

    def keep_rate(self, family: str | None = None) -> float:
        rows = [self.counts[family]] if family else list(self.counts.values())
        total = sum(sum(r.values()) for r in rows)
        return sum(r["kept"] for r in rows) / total if total else 0.0

    def table(self) -> str:
        """The verdicts as a Markdown table, one row per family."""
        lines = [
            "| family | samples | " + " | ".join(VERDICTS) + " | keep rate |",
            "|---|" + "---:|" * (len(VERDICTS) + 2),
        ]
        for family, row in sorted(self.counts.items()):
            cells = " | ".join(str(row[v]) for v in VERDICTS)
            lines.append(f"| {family} | {sum(row.values())} | {cells} | {self.keep_rate(family):.1%} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "keep_rate": self.keep_rate()}


@dataclass
class RejectionResult:
    """Kept rows (SFT data), every other answered sample (``rejected``, for DPO) and the stats."""

    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    stats: RejectionStats


def rejection_sample(
    policy: Policy,
    families: Sequence[str],
    n: int,
    *,
    k: int = 4,
    levels: Sequence[int] | None = None,
    seed: int = 1000,
    sampling: Sampling = Sampling(temperature=0.9, top_p=0.95, max_new_tokens=256),
    protocol: str | None = None,
    max_turns: int = 10,
    batch_size: int = 16,
    require_reflective: bool = True,
) -> RejectionResult:
    """Sample ``k`` trajectories for each of ``n`` puzzles per level and family, and sort them.

    Use a ``seed`` the cold-start data did not use, so the policy is sampled on puzzles it never saw.
    """
    stats = RejectionStats()
    result = RejectionResult([], [], stats)
    recorder = ConversationRecorder(policy)
    agent = Agent(recorder, protocol, Budgets(max_turns=max_turns), sampling=sampling)
    if not agent.protocol.draws:  # a sample is one turn; one without an answer can never be kept: no retries
        agent = Agent(recorder, agent.protocol, Budgets(max_turns=1), sampling=sampling)
    for name in families:
        family = get_family(name)
        puzzles = make_dataset(family, levels or family.levels, n, seed=seed)
        runs = [(puzzle, f"{puzzle.id}#{j}") for puzzle in puzzles for j in range(k)]
        for start in range(0, len(runs), batch_size):
            batch = runs[start : start + batch_size]
            traces = agent.solve_batch(
                [(p.image, p.question) for p, _ in batch], run_ids=[r for _, r in batch], puzzles=[p for p, _ in batch]
            )
            for (puzzle, run_id), trace in zip(batch, traces, strict=True):
                _sort(result, family.verify(puzzle, trace.answer), puzzle, run_id, trace, recorder, require_reflective)
    return result


def _sort(
    result: RejectionResult,
    correct: bool,
    puzzle: Puzzle,
    run_id: str,
    trace: Trace,
    recorder: ConversationRecorder,
    require_reflective: bool,
) -> None:
    outcome = verdict(trace, correct, require_reflective=require_reflective)
    result.stats.add(puzzle.family, outcome)
    conversation = recorder.whole_conversation(run_id, trace)
    if conversation is None:
        return  # no answer or a backend error: nothing to learn from
    row = to_row(Trajectory(puzzle, bool(redrawn_labels(trace)), trace, conversation), correct=correct)
    row["id"] = run_id  # k samples of one puzzle: the run id keeps rows distinct
    (result.kept if outcome == "kept" else result.rejected).append(row)
