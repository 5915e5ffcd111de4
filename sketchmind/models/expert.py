"""The expert policy: plays a puzzle family's drawing trajectory through the normal agent loop.

It reads the ground truth of the puzzle its run carries (``Conversation.puzzle``, given to the agent as
``solve(..., puzzle=...)``), plans it with the puzzle's family (``TaskFamily.expert``) and writes each
turn in the agent's own protocol, so the whole loop (parsing, drawing, observations, budgets, traces)
runs without a neural model. It is also the teacher for the cold-start SFT data.

Expert calls are in the pixels of the views the expert planned on (the puzzle's own image). The
agent may have resized the input (the ViLaSR protocol does), so each call is rescaled to the view
the model really sees and then written in the protocol's coordinate convention.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from sketchmind.actions import ActionError, ViewAction, parse_action
from sketchmind.canvas import WHITEBOARD_SIZE, Canvas
from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.protocols import Protocol, ToolCall, get_protocol
from sketchmind.tasks import get_family
from sketchmind.tasks.base import ExpertTurn, Puzzle, TaskFamily

if TYPE_CHECKING:
    from sketchmind.agent import Mode
    from sketchmind.trace import Trace


@dataclass(frozen=True)
class _PlannedCall:
    call: ToolCall
    view: int  # the view it draws on, resolved when planning
    size: tuple[int, int]  # that view's size as the expert planned it


@dataclass(frozen=True)
class _Plan:
    turns: list[ExpertTurn]
    calls: list[list[_PlannedCall]]
    source_size: tuple[int, int]  # (width, height) of the puzzle image the expert planned on


def plan_turns(puzzle: Puzzle, turns: Sequence[ExpertTurn]) -> list[list[_PlannedCall]]:
    """Replay the expert's calls on a private canvas to learn which view each one draws on.

    Raises ``ValueError`` if the expert wrote a call the canvas rejects (a bug in the family).
    """
    canvas = Canvas(puzzle.image)
    planned: list[list[_PlannedCall]] = []
    for turn in turns:
        row = []
        for call in turn.calls:
            action = parse_action(call.name, call.arguments)
            target = canvas[action.view] if isinstance(action, ViewAction) and action.view else canvas.latest
            outcome = canvas.apply(call.name, call.arguments)
            if isinstance(outcome, ActionError):
                raise ValueError(f"{puzzle.id}: expert call {call.name} is invalid: {outcome}")
            row.append(_PlannedCall(call, target.index, target.size))
        planned.append(row)
    return planned


class ExpertPolicy(Policy):
    """Writes the expert trajectory of the puzzle each conversation carries (``Conversation.puzzle``).

    Args:
        protocol: the agent's protocol (name or instance), so turns come out in its format.
        mode: ``text`` writes one turn with the expert's thoughts and the answer, no drawing.
        reflective: use trajectories with a drawn mistake that is noticed and fixed.
        seed: the family's expert seed for a puzzle (which mistake a reflective trajectory makes);
            default 0 for every puzzle. Synthesis varies it across puzzles.
    """

    name = "expert"
    needs_puzzle = True

    def __init__(
        self,
        protocol: str | Protocol = "sketchmind",
        *,
        mode: Mode = "draw",
        reflective: bool = False,
        seed: Callable[[Puzzle], int] | None = None,
    ) -> None:
        self.protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
        self.mode = mode
        self.reflective = reflective
        self.seed = seed
        # Plans by puzzle object, not by run: k samples of one puzzle share a plan, a caller that sized
        # its budget with ``planned_turns`` does not plan twice, and a plan goes when its puzzle does.
        self._plans: weakref.WeakKeyDictionary[Puzzle, _Plan] = weakref.WeakKeyDictionary()

    def planned_turns(self, puzzle: Puzzle) -> int:
        """The turns of ``puzzle``'s trajectory; ``ValueError`` if its family cannot plan it."""
        return len(self._plan(puzzle).turns)

    def _plan(self, puzzle: Puzzle) -> _Plan:
        """The trajectory for ``puzzle`` and the views its calls draw on, planned once per puzzle."""
        plan = self._plans.get(puzzle)
        if plan is None:
            family = get_family(puzzle.family)
            seed = 0 if self.seed is None else self.seed(puzzle)
            turns = family.expert(puzzle, reflective=self.reflective, seed=seed)
            size = WHITEBOARD_SIZE if puzzle.image is None else (puzzle.image.shape[1], puzzle.image.shape[0])
            plan = self._plans[puzzle] = _Plan(turns, plan_turns(puzzle, turns), size)
        return plan

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        if conversation.puzzle is None:
            raise BackendError(
                "the expert plays only runs that carry their puzzle: use `sketchmind bench FAMILY --model expert`, "
                "or `sketchmind solve` on an image inside a VSP maps/levelN/img folder"
            )
        plan = self._plan(conversation.puzzle)
        if self.mode == "text":
            thought = " ".join(t.thought for t in plan.turns)
            return _generation(self.protocol.format_turn(thought, answer=plan.turns[-1].answer))
        k = sum(1 for m in conversation.messages if m.get("role") == "assistant")
        if k >= len(plan.turns):
            raise BackendError(f"the expert trajectory has only {len(plan.turns)} turns")
        turn = plan.turns[k]
        if turn.answer is not None:
            return _generation(self.protocol.format_turn(turn.thought, answer=turn.answer))
        calls = [self._as_seen(p, conversation, plan.source_size) for p in plan.calls[k]]
        return _generation(self.protocol.format_turn(turn.thought, calls))

    def _as_seen(self, planned: _PlannedCall, conversation: Conversation, source_size: tuple[int, int]) -> ToolCall:
        """The call rescaled to the view the model sees and written in the protocol's convention."""
        view = planned.view
        if self.protocol.name == "vilasr" and "view" not in planned.call.arguments:
            view = max(conversation.images)  # ViLaSR draws a whole turn as one view on the latest image
        action = parse_action(planned.call.name, planned.call.arguments)
        if not isinstance(action, ViewAction):
            return planned.call
        planned_width, planned_height = planned.size
        # The agent only ever resizes the input, so every view scales by the input's ratio.
        source_height, source_width = conversation.images[1].shape[:2]
        sx, sy = source_width / source_size[0], source_height / source_size[1]
        image = conversation.images.get(view)
        if image is not None:
            height, width = image.shape[:2]
        else:  # a view this same turn makes before the call draws on it: not rendered yet
            width, height = round(planned_width * sx), round(planned_height * sy)
        if (width, height) != planned.size:
            action = action.scaled(width / planned_width, height / planned_height)
        action = action.from_pixels(width, height, self.protocol.convention)
        arguments = action.model_dump(exclude_none=True, exclude_defaults=True)
        arguments = {k: _rounded(v) for k, v in arguments.items()}
        if "view" in planned.call.arguments or self.protocol.name == "vilasr":
            arguments["view"] = view
        return replace(planned.call, arguments=arguments)


def _rounded(value: object) -> object:
    """Coordinates as a person would write them: integers for pixels, 3 decimals otherwise."""
    if isinstance(value, float):
        return round(value) if abs(value) >= 2 else round(value, 3)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _generation(output: str | object) -> Generation:
    if isinstance(output, str):
        return Generation(text=output)
    message = dict(output)  # type: ignore[call-overload]
    return Generation(text=str(message.get("content") or ""), message=message)


def run_expert(
    family: TaskFamily,
    puzzle: Puzzle,
    *,
    protocol: str | Protocol = "sketchmind",
    reflective: bool = False,
    mode: Literal["draw", "text"] = "draw",
) -> Trace:
    """Solve ``puzzle`` with its expert through the real agent loop and return the trace."""
    from sketchmind.agent import Agent, Budgets

    if puzzle.family != family.name:  # the expert plans with the puzzle's own family
        raise ValueError(f"{puzzle.id} is a {puzzle.family} puzzle, not {family.name}")
    policy = ExpertPolicy(protocol, mode=mode, reflective=reflective)
    run_id = f"{puzzle.id}-{uuid.uuid4().hex[:6]}"
    turns = policy.planned_turns(puzzle)
    agent = Agent(policy, policy.protocol, Budgets(max_turns=turns + 1, timeout=None), mode=mode)
    return agent.solve(puzzle.image, puzzle.question, run_id=run_id, puzzle=puzzle)


__all__ = ["ExpertPolicy", "plan_turns", "run_expert"]
