"""What every protocol provides: a system prompt, a tolerant parser and an observation formatter.

A protocol is the contract between one model family's output format and the canvas. Messages use
one neutral shape that each backend translates to its own API::

    {"role": "user" | "assistant" | "system" | "tool",
     "content": [{"type": "text", "text": "..."}, {"type": "image", "view": 3}],
     "tool_call_id": "..."}        # tool messages only

Images are referenced by view index, not embedded, so a message list stays small and a backend
can encode each image once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sketchmind.actions import ActionError
from sketchmind.canvas import View
from sketchmind.coords import Convention

Message = dict[str, Any]
ModelOutput = str | Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One requested action, exactly as the model named it (validated later by the canvas)."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass
class ParsedTurn:
    """A model turn split into its parts. ``errors`` are parse problems to show the model."""

    thought: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    answer: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """The turn gave a final answer."""
        return self.answer is not None


@dataclass(frozen=True)
class ToolResult:
    """What happened to one group of calls (usually one call): the new view, or the error for the model."""

    calls: tuple[ToolCall, ...]
    outcome: View | ActionError | str


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(view: int) -> dict[str, Any]:
    return {"type": "image", "view": view}


def image_budget_error(max_images: int) -> str:
    """What a call past the image budget gets back (the agent and the GRPO environment say the same)."""
    return f"image budget spent ({max_images} images): answer now"


def outcome_text(result: ToolResult) -> str:
    """The default one-line wording of a tool result."""
    if isinstance(result.outcome, View):
        return result.outcome.describe()
    return f"error: {result.outcome}"


class Protocol(ABC):
    """A prompt format: how tools are described, how outputs are read, how results are shown."""

    name: ClassVar[str]
    default_convention: ClassVar[Convention] = Convention.PIXELS
    style: ClassVar[str] = "sketchmind"
    image_max_pixels: ClassVar[int | None] = None  # resize inputs as the model family expects (ViLaSR)
    # False for a format with no tools (``search``): its own prompt then serves every agent mode.
    draws: ClassVar[bool] = True

    def __init__(self, convention: str | Convention | None = None) -> None:
        self.convention = Convention.parse(convention) if convention else self.default_convention

    @abstractmethod
    def system_prompt(self, tools: Sequence[Mapping[str, Any]], image_size: tuple[int, int] | None = None) -> str:
        """The system prompt for these tool specs (``sketchmind.tools.specs()``) and input image size."""

    def first_message(self, question: str, has_image: bool = True) -> Message:
        """The opening user message: the input image (view 1) and the question."""
        parts = [image_part(1)] if has_image else []
        return {"role": "user", "content": [*parts, text_part(question)]}

    @abstractmethod
    def parse(self, output: ModelOutput) -> ParsedTurn:
        """Split one model turn into thought, tool calls and answer. Never raises."""

    def format_turn(self, thought: str, calls: Sequence[ToolCall] = (), answer: str | None = None) -> ModelOutput:
        """Write a turn the way a model speaking this protocol would (the inverse of ``parse``).

        Expert trajectories and SFT data go through this, so the training text is exactly what the
        parser reads back.
        """
        raise NotImplementedError(f"the {self.name} protocol cannot write expert turns")

    def group(self, calls: Sequence[ToolCall]) -> list[list[ToolCall]]:
        """How calls become views: by default each call makes its own view."""
        return [[call] for call in calls]

    @abstractmethod
    def observation(
        self, results: Sequence[ToolResult], errors: Sequence[str] = (), final: bool = False
    ) -> list[Message]:
        """The messages that show the model what its calls did (new views or errors).

        ``final`` is set when the budget allows no more tool calls, so the model must answer now.
        """
