"""The canvas: an append-only list of immutable views, numbered from 1.

View 1 is the input image (or a blank whiteboard). Every action reads one earlier view and appends a
new one, so any view can be revisited by index and nothing a model has seen ever changes under it.
Each view keeps an exact affine map to the source image: a box drawn on a 4x zoom of a crop lands
on the right source pixels.

A drawing view stores the *unmarked* raster it was drawn on (shared, never copied) plus its marks.
That is what makes "same label replaces the old mark" exact: the new view is re-rendered from the
clean raster instead of painting over the old mark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from sketchmind.actions import (
    MAX_CALLS_PER_GROUP,
    Action,
    ActionError,
    Answer,
    Crop,
    Mark,
    ViewAction,
    Zoom,
    parse_action,
)
from sketchmind.coords import Affine, Convention
from sketchmind.images import ImageSource, load_image
from sketchmind.render import Style, draw_mark, draw_tags, get_style, render

MAX_VIEW_PIXELS = 16_777_216  # 4096 x 4096: the largest view a zoom may create
WHITEBOARD_SIZE = (1024, 1024)

_RESAMPLE = {
    "nearest": cv2.INTER_NEAREST_EXACT,  # pixel-centre aligned, unlike INTER_NEAREST
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class View:
    """One immutable image on the canvas and where it came from.

    ``to_source`` maps this view's continuous pixel coordinates to the source image's. ``base`` is
    the unmarked raster ``marks`` are drawn on; for the input image and for crops it is ``image``.
    """

    index: int
    image: np.ndarray = field(repr=False)
    parent: int | None = None
    actions: tuple[Action, ...] = ()
    to_source: Affine = field(default_factory=Affine)
    base: np.ndarray | None = field(default=None, repr=False)
    marks: tuple[Mark, ...] = ()

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    def pil(self) -> Image.Image:
        """The view as a PIL image (a copy; PIL stores RGB with padding)."""
        return Image.fromarray(self.image, "RGB")

    def png(self, compression: int = 1) -> bytes:
        """PNG bytes. Level 1 is ~5x faster than the default and only slightly larger."""
        ok, data = cv2.imencode(".png", self.image[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, compression])
        if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
            raise RuntimeError("PNG encoding failed")
        return data.tobytes()

    def from_source(self, x: float, y: float) -> tuple[float, float]:
        """Map a source-image point into this view."""
        return self.to_source.inverse()(x, y)

    def describe(self) -> str:
        """One line for logs and observations, e.g. ``view 3: box 'A' on view 1 (640x480)``."""
        if not self.actions:
            return f"view {self.index}: input ({self.width}x{self.height})"
        made = ", ".join(f"{a.tool} {a.label!r}" if isinstance(a, Mark) and a.label else a.tool for a in self.actions)
        return f"view {self.index}: {made} on view {self.parent} ({self.width}x{self.height})"


class Canvas:
    """An append-only sequence of views, numbered from 1, that actions draw on.

    Args:
        image: the input image (path, bytes, PIL image or array), or ``None`` for a blank whiteboard.
        coords: the coordinate convention actions use (``pixels``, ``norm1000`` or ``unit``).
        style: rendering style name (``sketchmind`` or ``vilasr``) or a ``Style``.
        whiteboard_size: (width, height) of the blank canvas when ``image`` is ``None``.
        max_pixels: refuse input images over this many pixels.
    """

    def __init__(
        self,
        image: ImageSource | None = None,
        *,
        coords: str | Convention = Convention.PIXELS,
        style: str | Style = "sketchmind",
        whiteboard_size: tuple[int, int] = WHITEBOARD_SIZE,
        max_pixels: int | None = None,
    ) -> None:
        self.convention = Convention.parse(coords)
        self.style = get_style(style)
        if image is None:
            width, height = whiteboard_size
            pixels = np.full((height, width, 3), 255, dtype=np.uint8)
        else:
            pixels = load_image(image, max_pixels=max_pixels)
            if isinstance(image, np.ndarray) and np.shares_memory(pixels, image):
                pixels = pixels.copy()  # the caller keeps a writable reference; view 1 must never change
        self.views: list[View] = [View(index=1, image=_frozen(pixels))]

    @property
    def source(self) -> View:
        return self.views[0]

    @property
    def latest(self) -> View:
        return self.views[-1]

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> View:
        """The view with this 1-based index."""
        if not isinstance(index, int) or not 1 <= index <= len(self.views):
            raise ActionError(f"view {index} does not exist; views are numbered 1 to {len(self.views)}")
        return self.views[index - 1]

    def apply(self, name: str, arguments: Mapping[str, Any] | str | None = None) -> View | ActionError:
        """Run one tool call and return the new view, or the error to show the model.

        This is the entry point for other agents: it never raises for bad model input.
        """
        try:
            return self.execute(parse_action(name, arguments))
        except ActionError as error:
            return error

    def apply_group(self, calls: Sequence[tuple[str, Mapping[str, Any] | str | None]]) -> View | ActionError:
        """Draw several marks on one view as a single new view (ViLaSR draws a whole call this way).

        All-or-nothing: if any call is invalid, no view is made and the first error is returned.
        At most ``MAX_CALLS_PER_GROUP`` marks make one view; a longer group is refused before parsing.
        """
        try:
            if len(calls) > MAX_CALLS_PER_GROUP:
                raise ActionError(f"{len(calls)} marks in one group, over the limit of {MAX_CALLS_PER_GROUP}")
            actions = [parse_action(name, arguments) for name, arguments in calls]
            if not actions:
                raise ActionError("no marks to draw")
            marks = [a for a in actions if isinstance(a, Mark)]
            if len(marks) != len(actions):
                raise ActionError("only drawing marks (box, line, point, path, grid, text) can be grouped")
            targets = {m.view for m in marks}
            if len(targets) != 1:
                raise ActionError(f"grouped marks must all draw on one view, got views {sorted(map(str, targets))}")
            resolved = [self._resolve(mark) for mark in marks]
        except ActionError as error:
            return error
        parent = resolved[0][0]
        pixels = [p for _, p in resolved if isinstance(p, Mark)]
        view = self._draw(parent, marks, pixels)
        self.views.append(view)
        return view

    def execute(self, action: Action) -> View:
        """Run a typed action and append the view it makes. Raises ``ActionError``."""
        if isinstance(action, Answer) or not isinstance(action, ViewAction):
            raise ActionError(f"{action.tool} does not draw; it ends the episode")
        parent, pixels = self._resolve(action)
        if isinstance(pixels, Mark):
            view = self._draw(parent, [action], [pixels])
        elif isinstance(pixels, Zoom):
            view = self._zoom(parent, action, pixels)
        elif isinstance(pixels, Crop):
            view = self._crop(parent, action, pixels.bbox)
        else:  # pragma: no cover - every ViewAction is a Mark, Crop or Zoom
            raise ActionError(f"{action.tool} is not supported by the canvas")
        self.views.append(view)
        return view

    def _resolve(self, action: ViewAction) -> tuple[View, ViewAction]:
        """The view an action reads and the action in that view's pixels; raises ``ActionError``."""
        parent = self[action.view] if action.view is not None else self.latest
        action.check(parent.index, parent.width, parent.height, self.convention)
        return parent, action.in_pixels(parent.width, parent.height, self.convention)

    def _draw(self, parent: View, actions: Sequence[Action], new: Sequence[Mark]) -> View:
        base = parent.base if parent.base is not None else parent.image
        marks = list(parent.marks)
        replaced = False
        for mark in new:
            # Same label: replace in place, so the mark keeps its slot (and, in ViLaSR, its colour).
            slot = next((i for i, m in enumerate(marks) if mark.label is not None and m.label == mark.label), None)
            if slot is None:
                marks.append(mark)
            else:
                marks[slot] = mark
                replaced = True
        if self.style.exact_vilasr:
            # ViLaSR redraws the merged marks over the parent's pixels, so a replaced mark stays visible.
            image = render(parent.image, marks, self.style)
        elif replaced:
            image = render(base, marks, self.style)
        else:
            # Common case: one copy of the parent plus the new marks; earlier marks are not redrawn.
            image = parent.image.copy()
            for i in range(len(parent.marks), len(marks)):
                draw_mark(image, marks[i], self.style, i, tag=False)
            draw_tags(image, marks, self.style)  # tags are small: redraw all, so none sits under a new stroke
        return View(
            index=len(self.views) + 1,
            image=_frozen(image),
            parent=parent.index,
            actions=tuple(actions),
            to_source=parent.to_source,
            base=base,
            marks=tuple(marks),
        )

    def _crop_box(self, parent: View, bbox: list[float]) -> tuple[int, int, int, int]:
        """Integer pixel bounds covering ``bbox``; an empty region is the model's error."""
        x1, y1 = int(np.floor(bbox[0])), int(np.floor(bbox[1]))
        x2, y2 = int(np.ceil(bbox[2])), int(np.ceil(bbox[3]))
        if x2 <= x1 or y2 <= y1:
            raise ActionError(f"region {[round(v, 2) for v in bbox]} on view {parent.index} is empty")
        return x1, y1, x2, y2

    def _crop(self, parent: View, action: Action, bbox: list[float]) -> View:
        x1, y1, x2, y2 = self._crop_box(parent, bbox)
        pixels = np.ascontiguousarray(parent.image[y1:y2, x1:x2])
        to_source = Affine.translate(x1, y1).then(parent.to_source)
        return View(len(self.views) + 1, _frozen(pixels), parent.index, (action,), to_source)

    def _zoom(self, parent: View, action: Action, zoom: Zoom) -> View:
        x1, y1, x2, y2 = self._crop_box(parent, zoom.bbox) if zoom.bbox else (0, 0, parent.width, parent.height)
        width, height = max(1, round((x2 - x1) * zoom.factor)), max(1, round((y2 - y1) * zoom.factor))
        if width * height > MAX_VIEW_PIXELS:
            raise ActionError(
                f"zoom x{zoom.factor:g} of a {x2 - x1}x{y2 - y1} region makes {width}x{height}, over the "
                f"{MAX_VIEW_PIXELS // 1_000_000} Mpx view limit; zoom into a smaller region"
            )
        region = parent.image[y1:y2, x1:x2]
        pixels = cv2.resize(region, (width, height), interpolation=_RESAMPLE[zoom.resample])
        # The exact scale is the realised size ratio, not the requested factor (sizes are rounded).
        scale = Affine.scale((x2 - x1) / width, (y2 - y1) / height)
        to_source = scale.then(Affine.translate(x1, y1)).then(parent.to_source)
        return View(len(self.views) + 1, _frozen(np.ascontiguousarray(pixels)), parent.index, (action,), to_source)

    def provenance(self) -> list[dict[str, Any]]:
        """JSON-ready records of every view: parent, action, size and map to the source."""
        return [
            {
                "index": v.index,
                "parent": v.parent,
                "actions": [{"name": a.tool, "arguments": a.model_dump(exclude_none=True)} for a in v.actions],
                "width": v.width,
                "height": v.height,
                "to_source": v.to_source.as_list(),
            }
            for v in self.views
        ]

    def __repr__(self) -> str:
        return f"Canvas({len(self.views)} views, {self.convention.value}, style={self.style.name!r})"
