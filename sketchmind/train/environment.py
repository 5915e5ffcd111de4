"""The drawing environment for GRPO rollouts: our canvas behind TRL's ``environment_factory``.

TRL makes one ``DrawingEnvironment`` per rollout and calls ``reset(**row)`` with every column of the
dataset row before generating. Each public method is a tool the model can call (the tools the ``sketchmind``
protocol's system prompt lists, ``answer`` included); TRL calls ``tool(**arguments)`` with the arguments the
model wrote and puts what it returns in a ``tool`` message. The call runs on a ``Canvas`` exactly as the
agent runs it (same arguments, same validation, same image budget), and the return value is the
``sketchmind`` protocol's observation of that one call, worded by ``SketchMindProtocol.observation``::

    [{"type": "text", "text": "<observation>view 2: box 'S' on view 1 (112x112)</observation>"},
     {"type": "image", "image": <PIL view>}]

or ``[{"type": "text", "text": "<observation>error: box: missing argument 'bbox'</observation>"}]``. With our tiny
models' chat template (consecutive tool messages are one user turn, no wrapper) a rollout then reads byte for
byte like the agent's conversation (see ``tests/test_grpo_format.py``). A model's mistake never makes a tool
raise; it is an error observation, recorded in ``calls``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sketchmind.actions import ACTIONS, ActionError
from sketchmind.canvas import Canvas, View
from sketchmind.coords import Convention
from sketchmind.images import fit_pixels
from sketchmind.protocols import ToolCall, ToolResult
from sketchmind.protocols.base import image_budget_error
from sketchmind.protocols.sketchmind import SketchMindProtocol
from sketchmind.tasks import get_family, puzzle_rng
from sketchmind.tool_functions import tool_function

ToolOutput = list[dict[str, Any]]
_PROTOCOL = SketchMindProtocol()  # observations do not depend on the coordinate convention
# The opening of every error observation, derived from the protocol so the check cannot drift from its wording.
ERROR_PREFIX = _PROTOCOL.observation([ToolResult((), "")])[0]["content"][0]["text"].removesuffix("</observation>")


@dataclass(frozen=True)
class CallRecord:
    """One tool call of a rollout: what the model asked for, and the view it made or the error it got."""

    name: str
    arguments: dict[str, Any]
    view: int | None = None
    error: str | None = None


def _tool(name: str) -> Callable[..., ToolOutput]:
    """The environment method for drawing tool ``name``: its signature and docstring, and so the schema TRL
    builds from them (``transformers.get_json_schema``), come from the tool's action, as ``tools.specs()`` does.

    The arguments go to the canvas exactly as the model wrote them (no defaults filled in, nothing
    checked here), so a wrong argument name, a missing one or a bad value gets the canvas's own error
    line, as at inference. TRL passes keyword arguments only.
    """

    def method(self: DrawingEnvironment, **arguments: Any) -> ToolOutput:
        return self._call(name, arguments)

    tool = tool_function(name, method, receiver=True)
    tool.__qualname__ = f"DrawingEnvironment.{name}"
    return tool


@dataclass(eq=False)
class DrawingEnvironment:
    """One rollout's canvas, with the drawing tools as methods (TRL ``environment_factory``).

    Args:
        max_images: views the model may see per rollout, the puzzle image included (the agent's
            ``Budgets.max_images``); a call past it draws nothing and gets the agent's budget error.
        max_pixels: tool images (and a puzzle regenerated from its row) are downscaled to this many pixels,
            as ``HFPolicy(max_pixels=...)`` downscales the views it shows.
        coords: the coordinate convention the model writes (``pixels``, ``norm1000`` or ``unit``).
        style: the canvas rendering style.

    Pass ``functools.partial(DrawingEnvironment, max_images=...)`` as ``environment_factory`` to change them.
    """

    max_images: int = 8
    max_pixels: int | None = None
    coords: str = Convention.PIXELS.value
    style: str = "sketchmind"
    canvas: Canvas = field(init=False, repr=False)
    calls: list[CallRecord] = field(init=False, default_factory=list)
    images_shown: int = field(init=False, default=0)
    puzzle_id: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.canvas = Canvas(None, coords=self.coords, style=self.style)

    def reset(self, **row: Any) -> None:
        """Start a rollout on the row's puzzle: its first ``images`` entry, or the puzzle regenerated from
        ``family``, ``level``, ``index`` and ``seed``, or a blank whiteboard. Adds nothing to the prompt."""
        image = self._first_image(row)
        self.canvas = Canvas(image, coords=self.coords, style=self.style)
        self.calls = []
        self.images_shown = 0 if image is None else 1  # the prompt shows the puzzle image (Agent._start)
        self.puzzle_id = row.get("id")

    def _first_image(self, row: Mapping[str, Any]) -> Any:
        images = row.get("images") or ([row["image"]] if row.get("image") is not None else [])
        if images:
            # As the model sees it (the dataset sized it). Undecoded datasets images are {"bytes", "path"}.
            first = images[0]
            return first.get("bytes") or first.get("path") if isinstance(first, Mapping) else first
        if row.get("family") is None:
            return None
        family = get_family(str(row["family"]))
        level, index, seed = int(row["level"]), int(row["index"]), int(row.get("seed", 0))
        puzzle = family.generate(puzzle_rng(family.name, seed, level, index), level, index)
        return fit_pixels(puzzle.image, self.max_pixels) if puzzle.image is not None else None

    @property
    def errors(self) -> list[str]:
        """The error lines the model got back, in order."""
        return [c.error for c in self.calls if c.error is not None]

    # ------------------------------------------------------------------------------------------- helpers

    def _call(self, name: str, arguments: dict[str, Any]) -> ToolOutput:
        """Run one call as ``Agent._act`` does and word the result as ``SketchMindProtocol.observation``."""
        outcome: View | ActionError | str
        if self.images_shown >= self.max_images:
            outcome = image_budget_error(self.max_images)  # checked before drawing, as the agent does
        else:
            try:
                outcome = self.canvas.apply(name, arguments)
            except Exception as exc:  # the canvas should never raise for model input; if it does, the rollout goes on
                outcome = f"{name}: {type(exc).__name__}: {exc}"
        if isinstance(outcome, View):
            self.images_shown += 1
            self.calls.append(CallRecord(name, dict(arguments), view=outcome.index))
        else:
            self.calls.append(CallRecord(name, dict(arguments), error=str(outcome)))
        (message,) = _PROTOCOL.observation([ToolResult((ToolCall(name, dict(arguments)),), outcome)])
        return [self._resolved(part) for part in message["content"]]

    def _resolved(self, part: Mapping[str, Any]) -> dict[str, Any]:
        """A protocol message part with its view reference replaced by the image TRL feeds the model."""
        if part.get("type") == "image":
            return {"type": "image", "image": fit_pixels(self.canvas[int(part["view"])].pil(), self.max_pixels)}
        return dict(part)


# Every drawing tool is a method (TRL's tools are the environment's public methods), ``answer`` included: the
# prompt lists it, so a call gets the canvas's answer ("answer does not draw"), as in the agent, rather than
# TRL's own "Tool answer not found.".
for _name in ACTIONS:
    if hasattr(DrawingEnvironment, _name):  # pragma: no cover - a tool named like reset would hide it
        raise TypeError(f"tool {_name!r} clashes with DrawingEnvironment.{_name}")
    setattr(DrawingEnvironment, _name, _tool(_name))


def is_error(content: str | Sequence[Any] | None) -> bool:
    """Whether a tool message's content is an error: our error observation, or TRL's ``{'error': ...}``
    (an unknown tool name, arguments that are not an object)."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, Sequence):
        text = next(
            (str(p.get("text") or "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"), ""
        )
    else:
        return False
    return text.startswith(ERROR_PREFIX) or text.startswith("{'error'")
