"""Typed drawing actions: their arguments, JSON Schemas and validation against a view.

An action arrives as ``(name, arguments)`` from a parser or a function call. ``parse_action`` turns it
into a frozen pydantic model or raises ``ActionError`` with one line the model can act on. Actions
keep coordinates in the model's convention; ``ViewAction.check`` validates them against the target
view and ``ViewAction.in_pixels`` converts them for rendering. Nothing is ever clamped: a point
outside the view is the model's mistake and goes back to it as text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, ValidationError

from sketchmind.coords import Convention

Number = FiniteFloat
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")

# Size limits on one call's arguments, checked before any parsing or validation work, so a hostile or
# runaway call (a 10 MB label, a million path points) costs microseconds and never reaches the renderer.
# The largest legitimate call, a 512-point path, is ~1,500 items and a few KB of text.
MAX_ARGUMENTS_CHARS = 65_536  # all strings of one call together (keys included), or its JSON text
MAX_ARGUMENT_ITEMS = 4_096  # list elements plus object members, at every level
MAX_ARGUMENT_DEPTH = 8  # nesting of lists and objects ({"points": [[x, y], ...]} is 3)
MAX_TOOL_NAME_CHARS = 64
MAX_ANSWER_CHARS = 4_096
MAX_CALLS_PER_GROUP = 64  # marks drawn as one view by Canvas.apply_group
_SHOWN = 40  # characters of an offending name echoed in an error


class ActionError(ValueError):
    """An action that cannot be carried out; ``str(error)`` is one line meant for the model."""


def _numbers_from(value: Any, keys: tuple[str, ...]) -> Any:
    """Accept the coordinate spellings models commonly emit and leave anything else to pydantic.

    ``{"x": 1, "y": 2}``, ``"1, 2"``, ``"(1, 2)"`` and nested pairs ``[[x1, y1], [x2, y2]]`` all
    become flat lists of numbers.
    """
    if isinstance(value, Mapping) and all(k in value for k in keys):
        return [value[k] for k in keys]
    if isinstance(value, str):
        found = _NUMBER.findall(value)
        return [float(n) for n in found] if found else value
    if isinstance(value, list | tuple) and value and all(isinstance(v, list | tuple) for v in value):
        return [n for pair in value for n in pair]
    return value


def _as_point(value: Any) -> Any:
    return _numbers_from(value, ("x", "y"))


def _is_finite(value: Any) -> bool:
    """A real, finite number; ints too large for a float are not (``math.isfinite`` raises on them)."""
    try:
        return isinstance(value, int | float) and math.isfinite(value)
    except OverflowError:
        return False


def _as_bbox(value: Any) -> Any:
    value = _numbers_from(value, ("x1", "y1", "x2", "y2"))
    if isinstance(value, list) and len(value) == 4 and all(_is_finite(v) for v in value):
        # Reversed corners are a harmless slip: order them rather than fail the call.
        x1, y1, x2, y2 = value
        return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
    return value


Point = Annotated[
    list[Number],
    BeforeValidator(_as_point),
    Field(min_length=2, max_length=2, description="[x, y]"),
]
BBox = Annotated[
    list[Number],
    BeforeValidator(_as_bbox),
    Field(min_length=4, max_length=4, description="[x1, y1, x2, y2]: top-left and bottom-right corners"),
]
Label = Annotated[
    str | None,
    Field(
        max_length=64,
        description="Short name for the mark. Drawing again with the same label replaces the old mark.",
    ),
]
ViewIndex = Annotated[
    int | None,
    Field(ge=1, description="Index of the view to act on (1 is the original image). Defaults to the latest view."),
]
Resample = Literal["nearest", "bilinear", "bicubic", "area", "lanczos"]


class Action(BaseModel):
    """Base of every action: a frozen, strictly-keyed argument record."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str]
    summary: ClassVar[str]


class ViewAction(Action):
    """An action that reads one view and makes a new one."""

    view: ViewIndex = None
    coordinate_fields: ClassVar[tuple[str, ...]] = ()

    def coordinates(self) -> Iterator[tuple[str, str, float]]:
        """Every coordinate as ``(field, axis, value)``, for validation."""
        for name in self.coordinate_fields:
            value = getattr(self, name)
            if value is None:
                continue
            flat = [n for p in value for n in p] if value and isinstance(value[0], list) else value
            for i, number in enumerate(flat):
                yield name, "xy"[i % 2], number

    def check(self, view_index: int, width: int, height: int, convention: Convention) -> None:
        """Raise ``ActionError`` if a coordinate falls outside the view (never clamps)."""
        max_x, max_y = convention.extent(width, height)
        for name, axis, value in self.coordinates():
            limit = max_x if axis == "x" else max_y
            if not 0 <= value <= limit:
                where = convention.describe(width, height)
                raise ActionError(f"{self.tool} {name}: {axis}={value:g} is outside view {view_index} ({where})")

    def in_pixels(self, width: int, height: int, convention: Convention) -> ViewAction:
        """A copy with every coordinate converted to view pixels."""
        if convention is Convention.PIXELS:
            return self
        sx, sy = (s / e for s, e in zip((width, height), convention.extent(width, height), strict=True))
        return self.scaled(sx, sy)

    def from_pixels(self, width: int, height: int, convention: Convention) -> ViewAction:
        """A copy with every coordinate converted from view pixels to ``convention`` (for experts)."""
        if convention is Convention.PIXELS:
            return self
        sx, sy = (e / s for s, e in zip((width, height), convention.extent(width, height), strict=True))
        return self.scaled(sx, sy)

    def scaled(self, sx: float, sy: float) -> ViewAction:
        """A copy with x coordinates multiplied by ``sx`` and y coordinates by ``sy``."""

        def scale(flat: list[float]) -> list[float]:
            return [v * (sx if i % 2 == 0 else sy) for i, v in enumerate(flat)]

        update: dict[str, Any] = {}
        for name in self.coordinate_fields:
            value = getattr(self, name)
            if value is None:
                continue
            update[name] = [scale(p) for p in value] if value and isinstance(value[0], list) else scale(value)
        return self.model_copy(update=update)


class Mark(ViewAction):
    """A drawing that is overlaid on a view; marks merge by label."""

    label: Label = None


class Box(Mark):
    tool: ClassVar[str] = "box"
    summary: ClassVar[str] = "Draw a rectangle around a region, e.g. an object or a cell."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("bbox",)
    bbox: BBox


class Line(Mark):
    tool: ClassVar[str] = "line"
    summary: ClassVar[str] = "Draw a straight auxiliary line, optionally with an arrowhead at the end."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("start", "end")
    start: Point
    end: Point
    arrow: bool = Field(False, description="Draw an arrowhead at the end point.")


class Dot(Mark):
    tool: ClassVar[str] = "point"
    summary: ClassVar[str] = "Mark a single point, e.g. a position or a landmark."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("point",)
    point: Point


class Path(Mark):
    tool: ClassVar[str] = "path"
    summary: ClassVar[str] = "Draw a polyline through the points in order, e.g. a route through a maze."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("points",)
    points: list[Point] = Field(min_length=2, max_length=512, description="Vertices [[x, y], ...] in order.")
    arrow: bool = Field(False, description="Draw an arrowhead at the last point.")


class Grid(Mark):
    tool: ClassVar[str] = "grid"
    summary: ClassVar[str] = "Overlay a rows x cols grid, numbered from 1, on the view or on a region of it."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("bbox",)
    rows: int = Field(ge=1, le=100, description="Number of rows.")
    cols: int = Field(ge=1, le=100, description="Number of columns.")
    bbox: BBox | None = Field(None, description="Region to cover [x1, y1, x2, y2]. Defaults to the whole view.")
    numbered: bool = Field(True, description="Write row and column numbers along the edges.")


class Text(Mark):
    tool: ClassVar[str] = "text"
    summary: ClassVar[str] = "Write a short note at a point."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("point",)
    point: Point
    text: str = Field(min_length=1, max_length=200, description="The note to write.")


class Crop(ViewAction):
    tool: ClassVar[str] = "crop"
    summary: ClassVar[str] = "Cut out a region of a view as a new view."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("bbox",)
    bbox: BBox


class Zoom(ViewAction):
    tool: ClassVar[str] = "zoom"
    summary: ClassVar[str] = "Enlarge a view (or a region of it) by a factor to see details."
    coordinate_fields: ClassVar[tuple[str, ...]] = ("bbox",)
    factor: Number = Field(gt=0, le=16, description="Scale factor, e.g. 2 doubles width and height.")
    bbox: BBox | None = Field(None, description="Region to enlarge [x1, y1, x2, y2]. Defaults to the whole view.")
    resample: Resample = Field("bicubic", description="Resampling filter; 'nearest' keeps hard pixel edges.")


class Answer(Action):
    tool: ClassVar[str] = "answer"
    summary: ClassVar[str] = "Give the final answer and stop."
    answer: str = Field(
        max_length=MAX_ANSWER_CHARS, description="The final answer, in the format the question asks for."
    )


ACTIONS: dict[str, type[Action]] = {cls.tool: cls for cls in (Box, Line, Dot, Path, Grid, Text, Crop, Zoom, Answer)}


def _shown(text: str) -> str:
    """A name from the input as it may appear in an error: one line, at most ``_SHOWN`` characters."""
    flat = " ".join(text[: _SHOWN + 1].split())
    return flat if len(flat) <= _SHOWN else flat[: _SHOWN - 3] + "..."


def check_size(arguments: Any) -> None:
    """Raise ``ActionError`` if decoded arguments exceed the size limits (``MAX_ARGUMENT_*``).

    The walk stops at the first limit it crosses, so its cost is bounded whatever the input's size.
    """
    chars = items = 0
    stack: list[tuple[Any, int]] = [(arguments, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            chars += len(value)
            if chars > MAX_ARGUMENTS_CHARS:
                raise ActionError(f"arguments hold over {MAX_ARGUMENTS_CHARS} characters of text; keep labels short")
            continue
        if not isinstance(value, Mapping | list | tuple):
            continue
        if depth >= MAX_ARGUMENT_DEPTH:
            raise ActionError(f"arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels")
        items += len(value)
        if items > MAX_ARGUMENT_ITEMS:
            raise ActionError(f"arguments hold over {MAX_ARGUMENT_ITEMS} values; a path takes at most 512 points")
        if isinstance(value, Mapping):
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        else:
            stack.extend((v, depth + 1) for v in value)


def _describe_errors(tool: str, error: ValidationError) -> str:
    """One line from pydantic's error list, worded for a model (the first few errors, names shortened)."""
    parts = []
    errors = error.errors(include_url=False)
    for item in errors[:4]:
        field = _shown(".".join(str(p) for p in item["loc"]))
        kind = item["type"]
        if kind == "missing":
            parts.append(f"missing argument '{field}'")
        elif kind == "extra_forbidden":
            allowed = ", ".join(ACTIONS[tool].model_fields)
            parts.append(f"unexpected argument '{field}' (arguments: {allowed})")
        else:
            parts.append(f"{field}: {item['msg']}" if field else item["msg"])
    if len(errors) > 4:
        parts.append(f"and {len(errors) - 4} more")
    return f"{tool}: " + "; ".join(parts)


def parse_action(name: str, arguments: Mapping[str, Any] | str | None = None) -> Action:
    """Build a typed action from a tool name and its arguments (a mapping or a JSON string).

    Raises ``ActionError`` with a single line for the model on any problem, including arguments over
    the size limits (``MAX_ARGUMENTS_CHARS`` and friends), which are refused before they are parsed.
    """
    text = name if isinstance(name, str) else str(name)[: MAX_TOOL_NAME_CHARS + 1]
    key = text.strip().lower() if len(text) <= MAX_TOOL_NAME_CHARS else ""
    cls = ACTIONS.get(key)
    if cls is None:
        raise ActionError(f"unknown tool {_shown(text)!r}; available tools: {', '.join(ACTIONS)}")
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        if len(arguments) > MAX_ARGUMENTS_CHARS:
            raise ActionError(f"{key}: arguments are {len(arguments)} characters, over the {MAX_ARGUMENTS_CHARS} limit")
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:  # also too-deep nesting and ints over Python's digit limit
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ActionError(f"{key}: arguments are not valid JSON ({reason})") from None
    if not isinstance(arguments, Mapping):
        raise ActionError(f"{key}: arguments must be a JSON object, got {type(arguments).__name__}")
    try:
        check_size(arguments)
    except ActionError as error:
        raise ActionError(f"{key}: {error}") from None
    try:
        return cls.model_validate(dict(arguments))
    except ValidationError as exc:
        raise ActionError(_describe_errors(key, exc)) from None


def _clean(schema: Any) -> Any:
    """Drop pydantic's titles and collapse ``anyOf[X, null]`` so function-calling APIs accept it."""
    if isinstance(schema, dict):
        options = schema.get("anyOf")
        if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
            inner = next(o for o in options if o != {"type": "null"})
            merged = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
            schema = {**inner, **merged}
        return {k: _clean(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def parameters_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one tool's arguments."""
    schema = _clean(ACTIONS[name].model_json_schema())
    schema.pop("description", None)
    schema["additionalProperties"] = False
    return dict(schema)
