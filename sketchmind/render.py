"""Rasterise marks onto images with OpenCV, anti-aliased, in a named style.

Rendering is the hot path of every agent turn, so it draws in place on one fresh copy of the parent
raster and never touches pixels outside the marks. Sizes scale with the image so a mark looks the
same on a 256 px thumbnail and a 4K photo. The ``vilasr`` style hands off to ``render_vilasr``, which
repeats ViLaSR's own PIL drawing so its released checkpoint sees what it was trained on.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sketchmind.actions import Box, Dot, Grid, Line, Mark, Path, Text
from sketchmind.render_vilasr import render_vilasr

RGB = tuple[int, int, int]

# Sasha Trubetskoy's distinct colours, most distinguishable first, minus the pale ones (yellow, lime,
# cyan) that vanish on white backgrounds.
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (240, 50, 230),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
    (0, 0, 128),
    (128, 128, 0),
)
BLACK: RGB = (0, 0, 0)
WHITE: RGB = (255, 255, 255)

_SHIFT = 4  # OpenCV fixed-point bits: coordinates are drawn to 1/16 px
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(label: str | None, ordinal: int = 0) -> RGB:
    """A stable colour: the same label gets the same colour in every view and every run."""
    if label is None:
        return PALETTE[ordinal % len(PALETTE)]
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def ink_on(color: RGB) -> RGB:
    """Black or white, whichever reads better on ``color`` (WCAG relative luminance)."""
    r, g, b = (c / 255 for c in color)
    return BLACK if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else WHITE


@dataclass(frozen=True)
class Style:
    """How marks look. ``thickness=None`` scales the stroke with the image size.

    ``exact_vilasr`` draws boxes and lines with ViLaSR's own PIL calls (see ``render_vilasr``). Its
    colours depend on a box's position and lines go over all boxes, so such a view is always
    re-rendered from the clean raster rather than painted on top of its parent.
    """

    name: str
    thickness: int | None = None
    exact_vilasr: bool = False

    def stroke(self, height: int, width: int) -> int:
        if self.thickness is not None:
            return self.thickness
        return max(2, round(min(height, width) / 200))


STYLES: dict[str, Style] = {
    "sketchmind": Style("sketchmind"),
    "vilasr": Style("vilasr", thickness=4, exact_vilasr=True),
}


def get_style(name: str | Style) -> Style:
    """Look a style up by name; one clear error for an unknown one."""
    if isinstance(name, Style):
        return name
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown style {name!r}; use one of {', '.join(STYLES)}") from None


def _fixed(points: Iterable[Sequence[float]]) -> np.ndarray:
    """Continuous coordinates -> OpenCV fixed-point pixel-centre coordinates."""
    array = np.asarray(list(points), dtype=np.float64) - 0.5
    return np.round(array * _ONE).astype(np.int32)


def _font_scale(height: int, width: int) -> float:
    return max(0.35, min(height, width) / 900)


def _tag(image: np.ndarray, text: str, x: float, y: float, color: RGB) -> None:
    """A filled label tag anchored at (x, y), kept inside the image so it is never cut off."""
    h, w = image.shape[:2]
    scale = _font_scale(h, w)
    weight = max(1, round(scale * 1.6))
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, weight)
    pad = max(2, round(th * 0.3))
    left = int(min(max(x, 0), max(w - tw - 2 * pad, 0)))
    top = int(min(max(y - th - base - 2 * pad, 0), max(h - th - base - 2 * pad, 0)))
    cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + th + base + 2 * pad), color, cv2.FILLED)
    cv2.putText(image, text, (left + pad, top + pad + th), _FONT, scale, ink_on(color), weight, cv2.LINE_AA)


def _dot(image: np.ndarray, x: float, y: float, radius: float, color: RGB, ring: RGB | None = None) -> None:
    centre = tuple(int(v) for v in _fixed([(x, y)])[0])
    r = max(1, round(radius * _ONE))
    if ring is not None:
        cv2.circle(image, centre, r + _ONE * max(1, round(radius / 3)), ring, cv2.FILLED, cv2.LINE_AA, _SHIFT)
    cv2.circle(image, centre, r, color, cv2.FILLED, cv2.LINE_AA, _SHIFT)


def _polyline(image: np.ndarray, pts: np.ndarray, color: RGB, t: int, arrow: bool) -> None:
    cv2.polylines(image, [pts], False, color, t, cv2.LINE_AA, _SHIFT)
    if arrow and len(pts) >= 2:
        tail, tip = pts[-2].astype(np.float64), pts[-1].astype(np.float64)
        length = float(np.hypot(*(tip - tail)))
        if length > 0:
            tip_length = min(0.5, 5 * t * _ONE / length)
            cv2.arrowedLine(
                image, tuple(map(int, tail)), tuple(map(int, tip)), color, t, cv2.LINE_AA, _SHIFT, tip_length
            )


def draw_mark(image: np.ndarray, mark: Mark, style: Style, ordinal: int = 0, *, tag: bool = True) -> None:
    """Draw one mark (in view pixels) onto ``image`` in place; ``ordinal`` colours unlabelled marks.

    With ``tag=False`` the label tag (and a ``text`` mark, which is all tag) is left for ``draw_tags``,
    so tags can go on top of every stroke.
    """
    h, w = image.shape[:2]
    t = style.stroke(h, w)
    color = color_for(mark.label, ordinal)
    if isinstance(mark, Box):
        x1, y1, x2, y2 = mark.bbox
        corners = _fixed([(x1 + 0.5, y1 + 0.5), (x2 - 0.5, y2 - 0.5)])
        cv2.rectangle(image, tuple(map(int, corners[0])), tuple(map(int, corners[1])), color, t, cv2.LINE_AA, _SHIFT)
    elif isinstance(mark, Line | Path):
        points = [mark.start, mark.end] if isinstance(mark, Line) else mark.points
        _polyline(image, _fixed(points), color, t, mark.arrow)
    elif isinstance(mark, Dot):
        x, y = mark.point
        _dot(image, x, y, 2 * t, color, ring=WHITE)
    elif isinstance(mark, Grid):
        _grid(image, mark, color, t)
    elif not isinstance(mark, Text):  # pragma: no cover - the type system keeps this unreachable
        raise TypeError(f"cannot draw {type(mark).__name__}")
    if tag:
        _draw_tag(image, mark, style, ordinal)


def _draw_tag(image: np.ndarray, mark: Mark, style: Style, ordinal: int) -> None:
    """A mark's label tag (a text mark's text) at its anchor: a box's corner, a path's start, beside a dot."""
    color = color_for(mark.label, ordinal)
    if isinstance(mark, Text):
        _tag(image, mark.text, mark.point[0], mark.point[1], color)
        return
    if not mark.label:
        return
    if isinstance(mark, Box):
        anchor = (mark.bbox[0], mark.bbox[1])
    elif isinstance(mark, Line):
        anchor = (mark.start[0], mark.start[1])
    elif isinstance(mark, Path):
        anchor = (mark.points[0][0], mark.points[0][1])
    elif isinstance(mark, Dot):
        t = style.stroke(*image.shape[:2])
        anchor = (mark.point[0] + 2 * t, mark.point[1] - 2 * t)
    elif isinstance(mark, Grid):
        anchor = (mark.bbox[0], mark.bbox[1]) if mark.bbox else (0.0, 0.0)
    else:  # pragma: no cover
        return
    _tag(image, mark.label, anchor[0], anchor[1], color)


def draw_tags(image: np.ndarray, marks: Sequence[Mark], style: Style) -> None:
    """Every mark's tag, in mark order, over all strokes: a later line never hides an earlier label."""
    for ordinal, mark in enumerate(marks):
        _draw_tag(image, mark, style, ordinal)


def _grid(image: np.ndarray, mark: Grid, color: RGB, t: int) -> None:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = mark.bbox if mark.bbox else (0.0, 0.0, float(w), float(h))
    thin = max(1, t // 2)
    xs = np.linspace(x1, x2, mark.cols + 1)
    ys = np.linspace(y1, y2, mark.rows + 1)
    # Grid lines are axis-aligned, so filled pixel strips are exact and ~5x faster than AA strokes.
    top, bottom, left, right = round(y1), round(y2) - 1, round(x1), round(x2) - 1
    for x in xs:
        start = min(max(round(x - thin / 2), 0), w - thin)
        cv2.rectangle(image, (start, top), (start + thin - 1, bottom), color, cv2.FILLED)
    for y in ys:
        start = min(max(round(y - thin / 2), 0), h - thin)
        cv2.rectangle(image, (left, start), (right, start + thin - 1), color, cv2.FILLED)
    if not mark.numbered:
        return
    scale = _font_scale(h, w) * 0.8
    weight = max(1, round(scale * 1.5))
    for axis, edges in (("col", xs), ("row", ys)):
        for i in range(len(edges) - 1):
            text = str(i + 1)
            (tw, th), _ = cv2.getTextSize(text, _FONT, scale, weight)
            centre = (edges[i] + edges[i + 1]) / 2
            x, y = (centre - tw / 2, y1 + th + 2 * thin) if axis == "col" else (x1 + 2 * thin, centre + th / 2)
            org = (int(x), int(y))
            cv2.putText(image, text, org, _FONT, scale, WHITE, weight + 2, cv2.LINE_AA)
            cv2.putText(image, text, org, _FONT, scale, color, weight, cv2.LINE_AA)


def render(base: np.ndarray, marks: Sequence[Mark], style: Style) -> np.ndarray:
    """A new image: ``base`` with every mark drawn. ``base`` is not modified."""
    if style.exact_vilasr:
        return render_vilasr(base, marks, lambda image, mark, ordinal: draw_mark(image, mark, style, ordinal))
    image = base.copy()
    for ordinal, mark in enumerate(marks):
        draw_mark(image, mark, style, ordinal, tag=False)
    draw_tags(image, marks, style)
    return image
