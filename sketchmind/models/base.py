"""The policy interface every backend implements: one assistant turn for a conversation.

A conversation is append-only: each turn adds the assistant's output and then the observation. That
is what lets a backend keep per-conversation state (the HF backend's KV cache) and prefill only the
new messages. Images are referenced by view index inside messages (see ``protocols.base``) and
resolved through ``Conversation.images``, so each image is encoded once, by the backend that needs it.

A run that solves a known puzzle carries it in ``Conversation.puzzle``: the one route by which any
policy learns a puzzle's ground truth (the expert plays it; models ignore it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sketchmind.protocols.base import Message

if TYPE_CHECKING:  # the tasks package imports the protocols; at runtime a policy needs no family loaded
    from sketchmind.tasks.base import Puzzle


class BackendError(RuntimeError):
    """The model backend failed (unreachable server, timeout, out of memory); one line for the user."""


@dataclass
class Conversation:
    """The messages so far and the views they reference. ``id`` keys any backend-side cache.

    ``puzzle`` is the puzzle the run solves, when its caller has one (a benchmark, synthesis, the demo):
    the same object on every turn of the run. Only a policy that plays ground truth reads it.
    """

    id: str
    messages: list[Message]
    images: Mapping[int, np.ndarray] = field(default_factory=dict)
    tools: Sequence[Mapping[str, Any]] | None = None  # for native function calling (openai-tools)
    puzzle: Puzzle | None = None


@dataclass(frozen=True)
class Sampling:
    """Decoding settings for one turn."""

    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    timeout: float | None = None  # seconds per backend call


@dataclass
class Generation:
    """One assistant turn as the backend produced it.

    ``message`` is the structured assistant message for function-calling backends (with
    ``tool_calls``); text protocols only need ``text``. ``logprob`` is the sum of the sampled
    tokens' log-probabilities, used to rank sampled trajectories.
    """

    text: str
    message: dict[str, Any] | None = None
    tokens_in: int | None = None  # prompt tokens actually prefilled for this turn
    tokens_out: int | None = None
    logprob: float | None = None
    seconds: float = 0.0
    context: int | None = None  # tokens in the model's context after this turn (prompt + output, cached or not)


class Policy(ABC):
    """A model that writes the next assistant turn."""

    name: str = "policy"
    # The coordinate convention the model was trained to write (``pixels``, ``norm1000``, ``unit``), when it
    # says; an agent given a protocol by name then speaks that convention. None: the protocol's default.
    coords: str | None = None
    # The protocol the model was trained to speak (``search`` for the search stage's policy), when it says; an
    # agent given no protocol speaks it. None: ``sketchmind``.
    protocol_name: str | None = None
    # A policy that plays the puzzle's ground truth (the expert) has nothing to say without one: callers
    # refuse such a run up front instead of letting its first turn fail.
    needs_puzzle: bool = False

    @abstractmethod
    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        """The next assistant turn for ``conversation``. Raises ``BackendError`` on backend failure."""

    def generate_batch(
        self, conversations: Sequence[Conversation], sampling: Sampling = Sampling()
    ) -> list[Generation]:
        """One turn for each conversation. Backends that can batch override this; the default loops."""
        return [self.generate(conversation, sampling) for conversation in conversations]

    def generate_stream(
        self, conversation: Conversation, sampling: Sampling, on_text: Callable[[str], None]
    ) -> Generation:
        """``generate``, calling ``on_text(text so far)`` as the text grows (``sketchmind serve``'s streaming).

        Backends that decode incrementally override this to report every token; the default reports the
        whole text once, when it is done. The returned ``Generation`` is authoritative (stop strings cut).
        """
        generation = self.generate(conversation, sampling)
        on_text(generation.text)
        return generation

    def release(self, conversation_id: str) -> None:
        """Forget any state kept for a finished conversation (e.g. its KV cache)."""
        return None  # stateless backends keep nothing

    def fork(self, source_id: str, target_id: str) -> None:
        """Let conversation ``target_id`` start from the state kept for ``source_id`` (e.g. its KV cache).

        ``sketchmind serve`` forks a finished request's state for a new request with the same messages, so
        that request prefills next to nothing. A hint only: a backend still checks that the new conversation
        extends what it reuses. ``target_id`` is released like any other conversation.
        """
        return None  # stateless backends keep nothing to share

    def count_tokens(self, conversation: Conversation) -> int | None:
        """Prompt length in tokens if the backend can tell cheaply (for the context budget)."""
        return None

    def planned_turns(self, puzzle: Puzzle) -> int | None:
        """How many turns this policy will write on ``puzzle``, if it knows before the run (the expert
        plays a fixed trajectory, so a caller can size the turn budget to it); ``None`` for a model.

        Raises ``ValueError`` if the policy cannot play ``puzzle`` at all.
        """
        return None
