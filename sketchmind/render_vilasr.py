"""ViLaSR's exact drawing, ported from its ``eval/utils/edit_image.py``, for the ``vilasr`` style.

ViLaSR's released checkpoint was trained on images drawn with PIL: 4 px box outlines coloured by the
box's position in the list (red, green, blue, ...), plain labels 8 px right and 6 px below the
corner, then black 4 px lines with radius-4 red start and blue end dots, drawn after all boxes.
We reproduce those PIL calls (not an OpenCV look-alike) so the model sees what it was trained on.
Marks ViLaSR has no tool for (point, grid, text) fall back to the SketchMind drawing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageColor, ImageDraw

from sketchmind.actions import Box, Line, Mark, Path

RGB = tuple[int, int, int]
_NAMES = (
    "red green blue yellow orange pink purple brown gray beige turquoise cyan magenta lime navy maroon teal olive "
    "coral lavender violet gold silver"
).split()
# ViLaSR appends all of PIL's colour names (repeats included) after its own list.
PALETTE: tuple[RGB, ...] = tuple(
    (rgb[0], rgb[1], rgb[2]) for rgb in (ImageColor.getrgb(name) for name in [*_NAMES, *ImageColor.colormap])
)
WIDTH = 4
DOT_RADIUS = 4


def _segments(mark: Line | Path) -> list[tuple[list[float], list[float]]]:
    points = [mark.start, mark.end] if isinstance(mark, Line) else mark.points
    return list(itertools.pairwise(points))


def render_vilasr(
    base: np.ndarray, marks: Sequence[Mark], fallback: Callable[[np.ndarray, Mark, int], None]
) -> np.ndarray:
    """``base`` with ``marks`` drawn as ViLaSR draws them; ``fallback(image, mark, ordinal)`` draws the rest."""
    image = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    boxes = [m for m in marks if isinstance(m, Box)]
    for i, box in enumerate(boxes):
        color = PALETTE[i % len(PALETTE)]
        # ViLaSR rescales by input/actual size even when they are equal: int(61 / 476 * 476) is 60.
        x1, y1, x2, y2 = (int(v / size * size) for v, size in zip(box.bbox, (width, height) * 2, strict=True))
        draw.rectangle(((x1, y1), (x2, y2)), outline=color, width=WIDTH)
        if box.label:
            draw.text((x1 + 8, y1 + 6), box.label, fill=color)
    for mark in marks:
        if not isinstance(mark, Line | Path):
            continue

        def scaled(point: list[float]) -> tuple[float, float]:
            return int(point[0]) / width * width, int(point[1]) / height * height  # ViLaSR's float arithmetic

        for start, end in _segments(mark):
            draw.line((*scaled(start), *scaled(end)), fill="black", width=WIDTH)
        first, last = _segments(mark)[0][0], _segments(mark)[-1][1]
        for point, dot in ((first, "red"), (last, "blue")):
            (x, y), r = scaled(point), DOT_RADIUS
            draw.ellipse([(x - r, y - r), (x + r, y + r)], fill=dot)
    array = np.array(image)
    for ordinal, mark in enumerate(marks):
        if not isinstance(mark, Box | Line | Path):
            fallback(array, mark, ordinal)
    return array
