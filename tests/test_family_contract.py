"""One contract every registered puzzle family keeps, in the spirit of Gymnasium's ``check_env``.

``check_family`` raises an ``AssertionError`` naming the first broken promise: levels, one-line refusals of
levels the family lacks, seed-determinism (puzzle k the same however many are made), distinct puzzles and
ids, JSON-ready records, a verifier that accepts the reference answer and rejects wrong ones, and an expert
whose drawings replay on a canvas, whose reflective run redraws a mistake, and whose answer verifies
through the real agent loop. It runs over ``FAMILY_NAMES``, so a newly registered family is covered
without a new test; deliberately broken families below show the checker can fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from sketchmind.canvas import Canvas, View
from sketchmind.tasks import FAMILY_NAMES, ExpertTurn, Puzzle, TaskFamily, get_family, make_dataset
from sketchmind.tasks.maze import Maze

GARBAGE: tuple[str | None, ...] = (None, "", "   ", "I cannot tell.", "<answer></answer>")


def _fingerprint(puzzle: Puzzle) -> str:
    """Everything a puzzle is (its record and its pixels), as one short digest.

    Short on purpose: pytest explains a failed ``==`` by diffing both sides, and with ``CI`` set it does not
    truncate, so comparing raw pixel bytes made a failing check spin for many minutes.
    """
    digest = hashlib.sha256(json.dumps(puzzle.record(), sort_keys=True, default=repr).encode())
    image = puzzle.image
    if image is not None:
        digest.update(f"{image.shape}{image.dtype}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def _value_error(what: str, call: Callable[[], object]) -> str:
    """The message of the ``ValueError`` that ``call`` must raise."""
    try:
        call()
    except ValueError as error:
        return str(error)
    except Exception as error:
        raise AssertionError(f"{what} raised {type(error).__name__} ({error}), not ValueError") from error
    raise AssertionError(f"{what} did not raise ValueError")


def _check_levels(family: TaskFamily) -> None:
    name, levels = family.name, family.levels
    assert isinstance(name, str) and name, f"{type(family).__name__}: the family needs a name"
    assert isinstance(levels, tuple) and levels, f"{name}: levels must be a non-empty tuple"
    assert all(isinstance(level, int) for level in levels), f"{name}: levels must be ints, not {levels}"
    assert list(levels) == sorted(set(levels)), f"{name}: levels must be distinct and easiest first, not {levels}"
    for bad in (min(levels) - 1, max(levels) + 1):
        for what, call in (
            (f"{name}.generate(level={bad})", lambda bad=bad: family.generate(np.random.default_rng(0), bad)),
            (f"make_dataset({name}, [{bad}])", lambda bad=bad: make_dataset(family, [bad], 1)),
        ):
            message = _value_error(what, call)
            assert "\n" not in message and str(bad) in message, f"{what}: not a one-line refusal naming it: {message!r}"


def _check_puzzle(family: TaskFamily, puzzle: Puzzle, level: int, index: int) -> None:
    where = f"{family.name} level {level} puzzle {index}"
    assert isinstance(puzzle, Puzzle), f"{where}: generate returned {type(puzzle).__name__}"
    assert (puzzle.family, puzzle.level, puzzle.index) == (family.name, level, index), (
        f"{where}: labelled {puzzle.family!r} level {puzzle.level} index {puzzle.index}"
    )
    assert puzzle.id == f"{family.name}-L{level}-{index}", f"{where}: id {puzzle.id!r}"
    assert isinstance(puzzle.question, str) and puzzle.question.strip(), f"{puzzle.id}: no question"
    assert isinstance(puzzle.answer, str) and puzzle.answer.strip(), f"{puzzle.id}: no reference answer"
    image = puzzle.image
    if image is not None:
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8, f"{puzzle.id}: image is not uint8"
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 0, (
            f"{puzzle.id}: image shape {image.shape} is not RGB"
        )
    record = puzzle.record()
    try:
        text = json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{puzzle.id}: record is not JSON-ready: {error}") from error
    assert json.loads(text) == record, f"{puzzle.id}: record changes through JSON (tuples or non-str keys?)"


def _check_generation(family: TaskFamily, level: int, n: int, seed: int) -> list[Puzzle]:
    name = family.name
    puzzles = make_dataset(family, [level], n, seed=seed)
    assert len(puzzles) == n, f"make_dataset({name}, [{level}], {n}) made {len(puzzles)} puzzles"
    for index, puzzle in enumerate(puzzles):
        _check_puzzle(family, puzzle, level, index)
    assert len({p.id for p in puzzles}) == n, f"{name}: puzzle ids repeat: {[p.id for p in puzzles]}"
    prints = [_fingerprint(p) for p in puzzles]
    assert len(set(prints)) == n, f"{name} level {level}: puzzles of one dataset repeat"
    # The same seed gives the same puzzles, and puzzle k does not depend on how many are made.
    again = make_dataset(family, [level], n - 1, seed=seed)
    for before, after in zip(puzzles, again, strict=False):
        assert _fingerprint(after) == _fingerprint(before), (
            f"{before.id}: not deterministic; the same seed gave a different puzzle"
        )
    other = make_dataset(family, [level], 1, seed=seed + 1)[0]
    assert _fingerprint(other) != prints[0], f"{name}: seeds {seed} and {seed + 1} give the same puzzle"
    return [*puzzles, other]


def _check_verify(family: TaskFamily, puzzles: list[Puzzle]) -> None:
    answers = sorted({p.answer for p in puzzles})
    checked = 0
    for puzzle in puzzles:
        assert family.verify(puzzle, puzzle.answer) is True, f"{puzzle.id}: its reference answer does not verify"
        for bad in GARBAGE:
            assert family.verify(puzzle, bad) is False, f"{puzzle.id}: verify accepts {bad!r}"
        wrong = [answer for answer in answers if answer != puzzle.answer]
        if wrong:
            checked += 1
            rejected = [answer for answer in wrong if family.verify(puzzle, answer) is False]
            assert rejected, f"{puzzle.id}: verify accepts every other puzzle's answer {wrong}"
    assert checked, f"{family.name}: every sampled puzzle has the same answer {answers}; none could be refused"


def _replay(puzzle: Puzzle, turns: list[ExpertTurn]) -> list[tuple[int, str | None]]:
    """Apply every call in order on a canvas of the puzzle; each must make a view. (turn, label) per call."""
    canvas = Canvas(puzzle.image)
    drawn = []
    for k, turn in enumerate(turns):
        for call in turn.calls:
            outcome = canvas.apply(call.name, call.arguments)
            assert isinstance(outcome, View), f"{puzzle.id}: expert call {call.name} {call.arguments} -> {outcome}"
            drawn.append((k, call.arguments.get("label")))
    return drawn


def _check_turns(family: TaskFamily, puzzle: Puzzle, turns: list[ExpertTurn], what: str) -> None:
    from sketchmind.agent import Budgets

    assert isinstance(turns, list) and turns, f"{puzzle.id}: the {what} expert wrote no turns"
    assert all(isinstance(t, ExpertTurn) for t in turns), f"{puzzle.id}: the {what} expert wrote a non-ExpertTurn"
    assert len(turns) <= Budgets().max_turns, f"{puzzle.id}: the {what} expert needs {len(turns)} turns"
    assert all(t.answer is None for t in turns[:-1]) and turns[-1].answer is not None, (
        f"{puzzle.id}: the {what} expert must answer in its last turn and only there"
    )
    assert family.verify(puzzle, turns[-1].answer), (
        f"{puzzle.id}: the {what} expert's answer {turns[-1].answer!r} does not verify"
    )


def _check_expert(family: TaskFamily, puzzle: Puzzle) -> None:
    plain = family.expert(puzzle)
    _check_turns(family, puzzle, plain, "plain")
    assert family.expert(puzzle) == plain, f"{puzzle.id}: the expert is not deterministic"
    _replay(puzzle, plain)
    reflective = family.expert(puzzle, reflective=True, seed=1)
    _check_turns(family, puzzle, reflective, "reflective")
    assert family.expert(puzzle, reflective=True, seed=1) == reflective, (
        f"{puzzle.id}: the reflective expert is not deterministic from its seed"
    )
    # A mistake is drawn, then redrawn under the same label in a later turn.
    drawn = _replay(puzzle, reflective)
    redrawn = {label for k, label in drawn if label and any(j > k and other == label for j, other in drawn)}
    assert redrawn, f"{puzzle.id}: the reflective expert redraws no label in a later turn"


def _check_agent(family: TaskFamily, puzzle: Puzzle) -> None:
    from sketchmind.models import expert  # an import error of our own code fails, never skips

    for reflective in (False, True):
        trace = expert.run_expert(family, puzzle, reflective=reflective)
        what = f"{puzzle.id} through the agent (reflective={reflective})"
        assert trace.status == "answered", f"{what}: {trace.status}: {trace.error}"
        assert family.verify(puzzle, trace.answer), f"{what}: answer {trace.answer!r} does not verify"
        errors = [e for step in trace.steps for e in step.errors]
        assert not errors, f"{what}: tool or parse errors {errors}"


def check_family(family: TaskFamily, *, level: int | None = None, n: int = 3, seed: int = 0) -> None:
    """Check ``family`` against the contract at ``level`` (its easiest by default) with ``n`` puzzles."""
    assert isinstance(family, TaskFamily), f"{family!r} is not a TaskFamily"
    _check_levels(family)
    level = family.levels[0] if level is None else level
    puzzles = _check_generation(family, level, n, seed)
    _check_verify(family, puzzles)
    _check_expert(family, puzzles[0])
    _check_agent(family, puzzles[0])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_registered_family_keeps_the_contract(name: str) -> None:
    family = get_family(name)
    assert family.name == name and type(get_family(name)) is type(family)
    check_family(family)


def test_unknown_family_is_a_one_line_error() -> None:
    message = _value_error("get_family('nosuch')", lambda: get_family("nosuch"))
    assert "\n" not in message and all(name in message for name in FAMILY_NAMES)


# --- the checker catches broken families -------------------------------------------------------------------


class Unseeded(Maze):
    """Ignores the generator it is given."""

    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        return super().generate(np.random.default_rng(), level, index)


class Stateful(Maze):
    """Each puzzle depends on how many came before it."""

    made = 0

    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        self.made += 1
        return super().generate(np.random.default_rng([self.made, int(rng.integers(2**31))]), level, index)


class WrongExpert(Maze):
    """An expert whose final answer is another puzzle's."""

    def expert(self, puzzle: Puzzle, *, reflective: bool = False, seed: int = 0) -> list[ExpertTurn]:
        turns = super().expert(puzzle, reflective=reflective, seed=seed)
        return [*turns[:-1], ExpertTurn(turns[-1].thought, answer="Moves: U,U,U,U")]


class NoRedraw(Maze):
    """A "reflective" expert that never makes (or fixes) a mistake."""

    def expert(self, puzzle: Puzzle, *, reflective: bool = False, seed: int = 0) -> list[ExpertTurn]:
        return super().expert(puzzle)


class AcceptsAnything(Maze):
    def verify(self, puzzle: Puzzle, answer: str | None) -> bool:
        return True


class AcceptsAnyMoves(Maze):
    """Rejects garbage, but any well-formed answer passes."""

    def verify(self, puzzle: Puzzle, answer: str | None) -> bool:
        return bool(answer and answer.strip() and answer.strip() not in ("I cannot tell.", "<answer></answer>"))


class AnyLevel(Maze):
    """Does not refuse levels it lacks."""

    def check_level(self, level: int) -> None:
        pass


class NotJson(Maze):
    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        puzzle = super().generate(rng, level, index)
        return dataclasses.replace(puzzle, truth={**puzzle.truth, "weight": math.nan})


class Unsorted(Maze):
    levels = (2, 1, 3)


class GreyImage(Maze):
    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        puzzle = super().generate(rng, level, index)
        assert puzzle.image is not None
        return dataclasses.replace(puzzle, image=puzzle.image[:, :, 0].astype(np.float32))


class SameId(Maze):
    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        return dataclasses.replace(super().generate(rng, level, index), index=0)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (Unseeded, "not deterministic"),
        (Stateful, "not deterministic"),
        (WrongExpert, "expert's answer .* does not verify"),
        (NoRedraw, "redraws no label"),
        (AcceptsAnything, "verify accepts None"),
        (AcceptsAnyMoves, "accepts every other puzzle's answer"),
        (AnyLevel, r"generate\(level=0\) raised KeyError"),
        (NotJson, "not JSON-ready"),
        (Unsorted, "easiest first"),
        (GreyImage, "not uint8"),
        (SameId, "index 0"),
    ],
)
def test_the_contract_catches_a_broken_family(broken: type[Maze], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_family(broken())
