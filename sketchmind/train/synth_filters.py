"""The filters a synthesized trajectory passes to become training data, and the counts they read off its trace.

As in ViLaSR, a trajectory is kept only if its answer verifies, none of its actions failed, and it drew in at
least ``min_rounds`` turns; ``reject_reason`` names the first filter that removes it (one of ``DROP_REASONS``).
"""

from __future__ import annotations

from typing import Any

from sketchmind.trace import Trace

DROP_REASONS: tuple[str, ...] = ("expert_failed", "no_answer", "wrong_answer", "invalid_action", "few_rounds")
_NOT_SHAPE = frozenset({"label", "view"})  # a mark repeated on a later view with the same label is no redraw


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
