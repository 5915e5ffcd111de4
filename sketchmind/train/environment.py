"""The drawing environment for GRPO rollouts: our canvas behind TRL's ``environment_factory``.

TRL makes one ``DrawingEnvironment`` per rollout and calls ``reset(**row)`` with every column of the
dataset row before generating. Each public method is a tool the model can call; TRL builds the tool list
in the prompt from their type hints and Google-style docstrings (``transformers.get_json_schema``). A call
draws on a ``Canvas`` and returns a multimodal tool response, the new view and one line about it::

    [{"type": "image", "image": <PIL view>}, {"type": "text", "text": "view 2: box 'S' on view 1 (112x112)"}]

which TRL puts in a ``tool`` message and feeds back to the model mid-rollout. A model's mistake (bad
arguments, a point off the view, an unknown argument name) comes back as an ``error: ...`` line and is
recorded in ``calls``; nothing a model writes makes a tool raise. After ``max_images`` images the tools
answer in text only, so a rollout's image tokens stay bounded.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from sketchmind.actions import Resample
from sketchmind.canvas import Canvas, View
from sketchmind.coords import Convention
from sketchmind.tasks import get_family, puzzle_rng

ToolOutput = list[dict[str, Any]] | str
ERROR_PREFIX = "error: "


def fit_pixels(image: Image.Image | np.ndarray, max_pixels: int | None) -> Image.Image:
    """``image`` as RGB PIL, downscaled (aspect kept, bicubic) to at most ``max_pixels`` pixels."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    pil = pil if pil.mode == "RGB" else pil.convert("RGB")
    if max_pixels and pil.width * pil.height > max_pixels:
        scale = math.sqrt(max_pixels / (pil.width * pil.height))
        pil = pil.resize((max(1, int(pil.width * scale)), max(1, int(pil.height * scale))), Image.Resampling.BICUBIC)
    return pil


@dataclass(frozen=True)
class CallRecord:
    """One tool call of a rollout: what the model asked for, and the view it made or the error it got."""

    name: str
    arguments: dict[str, Any]
    view: int | None = None
    error: str | None = None


def _tool(method: Callable[..., ToolOutput]) -> Callable[..., ToolOutput]:
    """Turn wrong argument names or counts into a recorded error line instead of a ``TypeError``.

    TRL calls ``tool(**arguments)`` with whatever the model wrote. The return annotation is dropped from
    the wrapper because ``get_json_schema`` would otherwise put it in the tool list the model reads.
    """
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: DrawingEnvironment, *args: Any, **kwargs: Any) -> ToolOutput:
        try:
            signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            unknown = [k for k in kwargs if k not in signature.parameters]
            allowed = ", ".join(p for p in signature.parameters if p != "self")
            reason = f"unexpected argument {unknown[0]!r} (arguments: {allowed})" if unknown else str(exc)
            return self._record(method.__name__, kwargs, f"{method.__name__}: {reason}")
        return method(self, *args, **kwargs)

    wrapper.__annotations__ = {k: v for k, v in method.__annotations__.items() if k != "return"}
    return wrapper


@dataclass(eq=False)
class DrawingEnvironment:
    """One rollout's canvas, with the drawing tools as methods (TRL ``environment_factory``).

    Args:
        max_images: images the tools may return per rollout; later calls still draw but answer in text.
        max_pixels: tool images (and a puzzle regenerated from its row) are downscaled to this many pixels.
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
        self.canvas = Canvas(self._first_image(row), coords=self.coords, style=self.style)
        self.calls = []
        self.images_shown = 0
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

    @_tool
    def box(self, bbox: list[float], label: str | None = None, view: int | None = None) -> ToolOutput:
        """Draw a rectangle around a region, e.g. an object or a cell.

        Args:
            bbox: [x1, y1, x2, y2]: top-left and bottom-right corners.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """
        return self._apply("box", bbox=bbox, label=label, view=view)

    @_tool
    def line(
        self,
        start: list[float],
        end: list[float],
        arrow: bool = False,
        label: str | None = None,
        view: int | None = None,
    ) -> ToolOutput:
        """Draw a straight auxiliary line, optionally with an arrowhead at the end.

        Args:
            start: [x, y] of the start point.
            end: [x, y] of the end point.
            arrow: Draw an arrowhead at the end point.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """
        return self._apply("line", start=start, end=end, arrow=arrow, label=label, view=view)

    @_tool
    def point(self, point: list[float], label: str | None = None, view: int | None = None) -> ToolOutput:
        """Mark a single point, e.g. a position or a landmark.

        Args:
            point: [x, y] of the point.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """
        return self._apply("point", point=point, label=label, view=view)

    @_tool
    def path(
        self, points: list[list[float]], arrow: bool = False, label: str | None = None, view: int | None = None
    ) -> ToolOutput:
        """Draw a polyline through the points in order, e.g. a route through a maze.

        Args:
            points: Vertices [[x, y], ...] in order.
            arrow: Draw an arrowhead at the last point.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """
        return self._apply("path", points=points, arrow=arrow, label=label, view=view)

    @_tool
    def grid(
        self,
        rows: int,
        cols: int,
        bbox: list[float] | None = None,
        numbered: bool = True,
        label: str | None = None,
        view: int | None = None,
    ) -> ToolOutput:
        """Overlay a rows x cols grid, numbered from 1, on the view or on a region of it.

        Args:
            rows: Number of rows.
            cols: Number of columns.
            bbox: Region to cover [x1, y1, x2, y2]. Defaults to the whole view.
            numbered: Write row and column numbers along the edges.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """
        return self._apply("grid", rows=rows, cols=cols, bbox=bbox, numbered=numbered, label=label, view=view)

    @_tool
    def text(self, point: list[float], text: str, label: str | None = None, view: int | None = None) -> ToolOutput:
        """Write a short note at a point.

        Args:
            point: [x, y] where the note starts.
            text: The note to write.
            label: Short name for the mark; drawing again with the same label replaces the old mark.
            view: Index of the view to draw on (1 is the original image). Defaults to the latest view.
        """
        return self._apply("text", point=point, text=text, label=label, view=view)

    @_tool
    def crop(self, bbox: list[float], view: int | None = None) -> ToolOutput:
        """Cut out a region of a view as a new view.

        Args:
            bbox: [x1, y1, x2, y2]: top-left and bottom-right corners of the region.
            view: Index of the view to crop (1 is the original image). Defaults to the latest view.
        """
        return self._apply("crop", bbox=bbox, view=view)

    @_tool
    def zoom(
        self, factor: float, bbox: list[float] | None = None, resample: Resample = "bicubic", view: int | None = None
    ) -> ToolOutput:
        """Enlarge a view (or a region of it) by a factor to see details.

        Args:
            factor: Scale factor, e.g. 2 doubles width and height.
            bbox: Region to enlarge [x1, y1, x2, y2]. Defaults to the whole view.
            resample: Resampling filter; 'nearest' keeps hard pixel edges.
            view: Index of the view to zoom (1 is the original image). Defaults to the latest view.
        """
        return self._apply("zoom", factor=factor, bbox=bbox, resample=resample, view=view)

    # ------------------------------------------------------------------------------------------- helpers

    def _apply(self, name: str, **arguments: Any) -> ToolOutput:
        given = {k: v for k, v in arguments.items() if v is not None}
        try:
            outcome = self.canvas.apply(name, given)
        except Exception as exc:  # the canvas should never raise for model input; if it does, the rollout goes on
            return self._record(name, given, f"{name}: {type(exc).__name__}: {exc}")
        if not isinstance(outcome, View):
            return self._record(name, given, str(outcome))
        self.calls.append(CallRecord(name, given, view=outcome.index))
        if self.images_shown >= self.max_images:
            return f"{outcome.describe()} (not shown: the budget of {self.max_images} images is spent)"
        self.images_shown += 1
        image = fit_pixels(outcome.pil(), self.max_pixels)
        return [{"type": "image", "image": image}, {"type": "text", "text": outcome.describe()}]

    def _record(self, name: str, arguments: Mapping[str, Any], error: str) -> str:
        self.calls.append(CallRecord(name, dict(arguments), error=error))
        return ERROR_PREFIX + error


def is_error(content: str | Sequence[Any] | None) -> bool:
    """Whether a tool message's content is an error: ours (``error: ...``) or TRL's (``{'error': ...}``)."""
    return isinstance(content, str) and (content.startswith(ERROR_PREFIX) or content.startswith("{'error'"))
