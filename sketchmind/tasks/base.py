"""What every puzzle family provides: unlimited verifiable puzzles and an expert that solves them by drawing.

A family turns a random generator and a difficulty level into a ``Puzzle`` (an image, a question,
the reference answer and the ground truth needed to check any answer). ``verify`` scores an answer
the way the benchmark it imitates does. ``expert`` writes the trajectory a careful person would:
thoughts and drawing calls, turn by turn, ending in the answer. Calls are in the pixels of the view
they draw on (the latest view unless they name one); ``ExpertPolicy`` converts them to whatever
protocol and coordinate convention the agent uses.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sketchmind.protocols.base import ToolCall


@dataclass(frozen=True, eq=False)
class Puzzle:
    """One problem: what the model sees (image, question) and what only the checker sees (truth)."""

    family: str
    level: int
    index: int
    question: str
    answer: str  # one reference answer; ``verify`` may accept others (e.g. any safe plan)
    image: np.ndarray | None  # RGB uint8, or None for a text-only puzzle
    truth: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready ground truth for verify/expert
    meta: Mapping[str, Any] = field(default_factory=dict)  # rendering style, augmentations, source path

    @property
    def id(self) -> str:
        """A stable name, unique within a dataset: ``family-L{level}-{index}``."""
        return f"{self.family}-L{self.level}-{self.index}"

    def record(self) -> dict[str, Any]:
        """JSON-ready description (everything but the pixels), for result files."""
        return {
            "id": self.id,
            "family": self.family,
            "level": self.level,
            "index": self.index,
            "question": self.question,
            "answer": self.answer,
            "truth": dict(self.truth),
            "meta": dict(self.meta),
        }


@dataclass(frozen=True)
class ExpertTurn:
    """One assistant turn of an expert trajectory: a thought, then drawing calls or the final answer."""

    thought: str
    calls: tuple[ToolCall, ...] = ()
    answer: str | None = None

    def __post_init__(self) -> None:
        if (self.answer is None) == (not self.calls):
            raise ValueError("an expert turn has either calls or an answer, not both or neither")


class TaskFamily(ABC):
    """A generator of verifiable puzzles with an expert that solves them by drawing."""

    name: ClassVar[str]
    levels: ClassVar[tuple[int, ...]]  # the difficulty levels this family supports, easiest first

    @abstractmethod
    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        """A new puzzle of this level; the same generator state always gives the same puzzle."""

    @abstractmethod
    def verify(self, puzzle: Puzzle, answer: str | None) -> bool:
        """Whether ``answer`` (the model's final answer text, possibly verbose) solves ``puzzle``."""

    @abstractmethod
    def expert(self, puzzle: Puzzle, *, reflective: bool = False, seed: int = 0) -> list[ExpertTurn]:
        """A drawing trajectory that solves ``puzzle``.

        With ``reflective=True`` the trajectory contains a mistake that is drawn, noticed in a later
        thought, and redrawn under the same label before the answer.
        """

    def check_level(self, level: int) -> None:
        """Raise a one-line ``ValueError`` for a level this family does not have."""
        if level not in self.levels:
            raise ValueError(f"{self.name} has levels {self.levels[0]}-{self.levels[-1]}, not {level}")


def puzzle_rng(family: str, seed: int, level: int, index: int) -> np.random.Generator:
    """The generator for puzzle ``index`` of ``level``: independent of how many puzzles are made."""
    return np.random.default_rng([zlib.crc32(family.encode()), seed, level, index])


def make_dataset(family: TaskFamily, levels: Sequence[int], n: int, seed: int = 0) -> list[Puzzle]:
    """``n`` puzzles per level, deterministic from ``seed`` (puzzle k is the same whatever ``n`` is)."""
    for level in levels:
        family.check_level(level)
    return [
        family.generate(puzzle_rng(family.name, seed, level, index), level, index)
        for level in levels
        for index in range(n)
    ]
