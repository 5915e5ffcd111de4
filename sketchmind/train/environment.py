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

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sketchmind.actions import ActionError, Resample
from sketchmind.canvas import Canvas, View
from sketchmind.coords import Convention
from sketchmind.images import fit_pixels
from sketchmind.protocols import ToolCall, ToolResult
from sketchmind.protocols.base import image_budget_error
from sketchmind.protocols.sketchmind import SketchMindProtocol
from sketchmind.tasks import get_family, puzzle_rng

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


def _tool(declaration: Callable[..., None]) -> Callable[..., ToolOutput]:
    """Make a tool from a declaration: its signature and docstring are the schema TRL builds
    (``transformers.get_json_schema``), and a call runs on the canvas as the agent would run it.

    The arguments go to the canvas exactly as the model wrote them (no defaults filled in, nothing
    checked here), so a wrong argument name, a missing one or a bad value gets the canvas's own error
    line, as at inference. TRL passes keyword arguments only.
    """

    @functools.wraps(declaration)
    def wrapper(self: DrawingEnvironment, **arguments: Any) -> ToolOutput:
        return self._call(declaration.__name__, arguments)

    # The declared return type would otherwise appear in the tool schema.
    wrapper.__annotations__ = {k: v for k, v in declaration.__annotations__.items() if k != "return"}
    return wrapper


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

    # ------------------------------------------------------------------------------------------- the tools
    # Declarations only: ``_tool`` runs each call on the canvas. Their docstrings are what TRL's schema says.

    @_tool
    def box(self, bbox: list[float], label: str | None = None, view: int | None = None) -> None:
        """Draw a rectangle around a region, e.g. an object or a cell.

        Args:
            bbox: [x1, y1, x2, y2]: top-left and bottom-right corners.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """

    @_tool
    def line(
        self,
        start: list[float],
        end: list[float],
        arrow: bool = False,
        label: str | None = None,
        view: int | None = None,
    ) -> None:
        """Draw a straight auxiliary line, optionally with an arrowhead at the end.

        Args:
            start: [x, y] of the start point.
            end: [x, y] of the end point.
            arrow: Draw an arrowhead at the end point.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """

    @_tool
    def point(self, point: list[float], label: str | None = None, view: int | None = None) -> None:
        """Mark a single point, e.g. a position or a landmark.

        Args:
            point: [x, y] of the point.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """

    @_tool
    def path(
        self, points: list[list[float]], arrow: bool = False, label: str | None = None, view: int | None = None
    ) -> None:
        """Draw a polyline through the points in order, e.g. a route through a maze.

        Args:
            points: Vertices [[x, y], ...] in order.
            arrow: Draw an arrowhead at the last point.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """

    @_tool
    def grid(
        self,
        rows: int,
        cols: int,
        bbox: list[float] | None = None,
        numbered: bool = True,
        label: str | None = None,
        view: int | None = None,
    ) -> None:
        """Overlay a rows x cols grid, numbered from 1, on the view or on a region of it.

        Args:
            rows: Number of rows.
            cols: Number of columns.
            bbox: Region to cover [x1, y1, x2, y2]. Defaults to the whole view.
            numbered: Write row and column numbers along the edges.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """

    @_tool
    def text(self, point: list[float], text: str, label: str | None = None, view: int | None = None) -> None:
        """Write a short note at a point.

        Args:
            point: [x, y] where the note starts.
            text: The note to write.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """

    @_tool
    def crop(self, bbox: list[float], view: int | None = None) -> None:
        """Cut out a region of a view as a new view.

        Args:
            bbox: [x1, y1, x2, y2]: top-left and bottom-right corners of the region.
            view: Index of the view to crop (1 is the original image). Defaults to the latest view.
        """

    @_tool
    def zoom(
        self, factor: float, bbox: list[float] | None = None, resample: Resample = "bicubic", view: int | None = None
    ) -> None:
        """Enlarge a view (or a region of it) by a factor to see details.

        Args:
            factor: Scale factor, e.g. 2 doubles width and height.
            bbox: Region to enlarge [x1, y1, x2, y2]. Defaults to the whole view.
            resample: Resampling filter; 'nearest' keeps hard pixel edges.
            view: Index of the view to zoom (1 is the original image). Defaults to the latest view.
        """

    # The prompt lists ``answer`` as a tool, so a call to it gets the canvas's answer ("answer does not draw"),
    # as in the agent, rather than TRL's own "Tool answer not found.".
    @_tool
    def answer(self, answer: str) -> None:
        """Give the final answer and stop.

        Args:
            answer: The final answer.
        """

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
