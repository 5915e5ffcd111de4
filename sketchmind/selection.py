"""Test-time scaling: pick one answer from several sampled trajectories.

``vote`` is self-consistency (the most common answer wins; ties go to the likelier trajectory).
``likelihood`` ranks trajectories by length-normalised log-likelihood, LaCoT's BiN idea: the mean
log-probability per generated token, so long trajectories are not penalised for their length.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from sketchmind.trace import Trace

Select = Literal["vote", "likelihood"]


def normalise_answer(answer: str) -> str:
    """The form answers are compared in: case, spacing (also around commas) and a final period do not count."""
    spaced = re.sub(r"\s+", " ", answer).strip().strip(".").lower()
    return re.sub(r"\s*([,;:])\s*", r"\1", spaced)


def mean_logprob(trace: Trace) -> float:
    """Log-likelihood per generated token over the whole trajectory (-inf if unknown)."""
    logprobs = [s.logprob for s in trace.steps if s.logprob is not None]
    tokens = sum(s.tokens_out or 0 for s in trace.steps)
    if not logprobs or tokens == 0:
        return float("-inf")
    return sum(logprobs) / tokens


def select(traces: Sequence[Trace], how: Select) -> int:
    """The index of the chosen trajectory. Trajectories without an answer are chosen last."""
    if not traces:
        raise ValueError("no trajectories to select from")
    answered = [i for i, t in enumerate(traces) if t.answer is not None]
    if not answered:
        return max(range(len(traces)), key=lambda i: mean_logprob(traces[i]))
    if how == "likelihood":
        return max(answered, key=lambda i: mean_logprob(traces[i]))
    if how != "vote":
        raise ValueError(f"unknown selection {how!r}; use 'vote' or 'likelihood'")
    votes = Counter(normalise_answer(traces[i].answer or "") for i in answered)
    top = max(votes.values())
    winners = [i for i in answered if votes[normalise_answer(traces[i].answer or "")] == top]
    return max(winners, key=lambda i: mean_logprob(traces[i]))
