"""A policy that replays recorded assistant turns instead of running a model.

Use it to re-render a saved trace (with another style, protocol or canvas version), to drive the
agent with expert trajectories, or to reproduce a bug report exactly. It is stateless: the turn to
replay is the number of assistant messages already in the conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling


class ReplayPolicy(Policy):
    """Replays ``outputs[k]`` as the k-th assistant turn: a string, or a structured assistant message."""

    name = "replay"

    def __init__(self, outputs: Sequence[str | dict[str, Any]]) -> None:
        self.outputs = list(outputs)

    @classmethod
    def from_trace(cls, trace_dir: str | Path) -> ReplayPolicy:
        """Replay the raw model outputs of a saved trace."""
        from sketchmind.trace import Trace

        trace = Trace.load(trace_dir)
        replay = cls([step.raw for step in trace.steps])
        from sketchmind.protocols import PROTOCOLS

        if trace.protocol in PROTOCOLS:  # replayed in the protocol it was written in (not `sketchmind draw`'s)
            replay.protocol_name = trace.protocol
        return replay

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        turn = sum(1 for m in conversation.messages if m.get("role") == "assistant")
        if turn >= len(self.outputs):
            raise BackendError(f"replay has only {len(self.outputs)} recorded turns")
        output = self.outputs[turn]
        if isinstance(output, str):
            return Generation(text=output)
        return Generation(text=str(output.get("content") or ""), message=dict(output))
