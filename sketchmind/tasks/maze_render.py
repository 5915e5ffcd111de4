"""Drawing a wall maze: dark wall strokes on a light background, a green "S" start and a red "G" goal.

Separate from ``maze.py`` because how a maze looks (and how that varies between puzzles) changes for
different reasons than how it is generated, asked about and checked. Everything here is integer
geometry: the cell grid starts at ``(margin, margin)`` and cell ``(r, c)`` spans
``[margin + c * cell, margin + (c + 1) * cell]`` horizontally, so the expert can compute exact centres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

RGB = tuple[int, int, int]
Walls = npt.NDArray[np.bool_]

MAX_SIDE = 512  # the longest image side
_MIN_CELL, _MAX_CELL = 40, 96
_DARK_INKS: tuple[RGB, ...] = ((20, 20, 20), (25, 30, 70), (60, 35, 20), (20, 55, 35), (55, 55, 60))
_START_RGB: RGB = (40, 170, 70)
_GOAL_RGB: RGB = (215, 45, 45)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class MazeStyle:
    """How one maze is drawn; every field is recorded in the puzzle's ``meta``."""

    cell: int  # cell side in pixels
    margin: int  # pixels between the image border and the outer wall's centre line
    wall: int  # wall stroke thickness in pixels
    wall_rgb: RGB
    background_rgb: RGB
    start_rgb: RGB
    goal_rgb: RGB

    def size(self, rows: int, cols: int) -> tuple[int, int]:
        """(width, height) of the image for a ``rows`` x ``cols`` maze."""
        return cols * self.cell + 2 * self.margin, rows * self.cell + 2 * self.margin

    def centre(self, r: int, c: int) -> tuple[float, float]:
        """The pixel centre (x, y) of cell ``(r, c)`` (0-based), in continuous coordinates."""
        return self.margin + (c + 0.5) * self.cell, self.margin + (r + 0.5) * self.cell

    def record(self) -> dict[str, Any]:
        """JSON-ready description for ``Puzzle.meta``."""
        return {
            "origin": [self.margin, self.margin],
            "cell_size": self.cell,
            "wall_thickness": self.wall,
            "wall_color": list(self.wall_rgb),
            "background": list(self.background_rgb),
            "start_color": list(self.start_rgb),
            "goal_color": list(self.goal_rgb),
        }


def _jitter(rng: np.random.Generator, color: RGB, amount: int, low: int = 0, high: int = 255) -> RGB:
    shifted = np.clip(np.asarray(color) + rng.integers(-amount, amount + 1, size=3), low, high)
    r, g, b = (int(v) for v in shifted)
    return r, g, b


def sample_style(rng: np.random.Generator, rows: int, cols: int) -> MazeStyle:
    """A random look that keeps the image side <= ``MAX_SIDE`` and walls clearly thicker than hairlines."""
    margin = int(rng.integers(10, 25))
    fit = (MAX_SIDE - 2 * margin) // max(rows, cols)
    cell = int(rng.integers(min(_MIN_CELL, fit), min(_MAX_CELL, fit) + 1))
    wall = int(rng.integers(3, max(4, cell // 9) + 1))
    ink = _DARK_INKS[int(rng.integers(len(_DARK_INKS)))]
    tint = rng.integers(232, 256, size=3)
    return MazeStyle(
        cell=cell,
        margin=margin,
        wall=wall,
        wall_rgb=_jitter(rng, ink, 10, high=90),
        background_rgb=(int(tint[0]), int(tint[1]), int(tint[2])),
        start_rgb=_jitter(rng, _START_RGB, 15),
        goal_rgb=_jitter(rng, _GOAL_RGB, 15),
    )


def _wall(image: np.ndarray, x1: int, y1: int, x2: int, y2: int, style: MazeStyle) -> None:
    """An axis-aligned wall from (x1, y1) to (x2, y2), both grid corners; ends overlap so corners close."""
    half = style.wall // 2
    left, top = min(x1, x2) - half, min(y1, y2) - half
    right, bottom = max(x1, x2) - half + style.wall - 1, max(y1, y2) - half + style.wall - 1
    cv2.rectangle(image, (left, top), (right, bottom), style.wall_rgb, cv2.FILLED)


def _letter(image: np.ndarray, text: str, x: float, y: float, height: float) -> None:
    """White ``text`` centred on (x, y), about ``height`` pixels tall."""
    scale = max(0.3, height / 22)
    weight = max(1, round(height / 9))
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, weight)
    cv2.putText(image, text, (round(x - tw / 2), round(y + th / 2)), _FONT, scale, (255, 255, 255), weight, cv2.LINE_AA)


def render_maze(
    right: Walls, down: Walls, start: tuple[int, int], goal: tuple[int, int], style: MazeStyle
) -> np.ndarray:
    """The RGB uint8 image of a maze.

    ``right[r, c]`` is a wall between cells ``(r, c)`` and ``(r, c + 1)``; ``down[r, c]`` one between
    ``(r, c)`` and ``(r + 1, c)``. The outer boundary is always walled.
    """
    rows, cols = down.shape[0] + 1, right.shape[1] + 1
    width, height = style.size(rows, cols)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = style.background_rgb
    m, s = style.margin, style.cell
    for r in range(rows):
        for c in range(cols - 1):
            if right[r, c]:
                x = m + (c + 1) * s
                _wall(image, x, m + r * s, x, m + (r + 1) * s, style)
    for r in range(rows - 1):
        for c in range(cols):
            if down[r, c]:
                y = m + (r + 1) * s
                _wall(image, m + c * s, y, m + (c + 1) * s, y, style)
    x_end, y_end = m + cols * s, m + rows * s
    for x1, y1, x2, y2 in ((m, m, x_end, m), (m, y_end, x_end, y_end), (m, m, m, y_end), (x_end, m, x_end, y_end)):
        _wall(image, x1, y1, x2, y2, style)
    # Markers fill about 60% of the cell so they never touch the walls.
    sx, sy = style.centre(*start)
    radius = 0.3 * s
    cv2.circle(image, (round(sx), round(sy)), round(radius), style.start_rgb, cv2.FILLED, cv2.LINE_AA)
    _letter(image, "S", sx, sy, radius)
    gx, gy = style.centre(*goal)
    half = round(0.3 * s)
    cv2.rectangle(image, (round(gx) - half, round(gy) - half), (round(gx) + half, round(gy) + half), style.goal_rgb, -1)
    _letter(image, "G", gx, gy, radius)
    return image
