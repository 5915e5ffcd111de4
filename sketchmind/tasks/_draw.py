"""Small drawing and geometry helpers shared by the puzzle renderers and their experts.

Text uses OpenCV's Hershey fonts, so puzzles need no font files. Points are continuous coordinates
(``coords.py``): (0, 0) is the top-left corner, so OpenCV's pixel-centre coordinates are shifted by 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from sketchmind.coords import Affine

RGB = tuple[int, int, int]
FONT = cv2.FONT_HERSHEY_SIMPLEX
SHIFT = 4  # fixed-point bits: shapes are drawn to 1/16 px
ONE = 1 << SHIFT


def fixed(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Continuous coordinates -> OpenCV fixed-point pixel-centre coordinates (int32, shape (N, 2))."""
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2) - 0.5
    return np.round(array * ONE).astype(np.int32)


def text_scale(text: str, height: float, thickness: int) -> float:
    """The Hershey font scale whose cap height is ``height`` pixels."""
    (_, th), _ = cv2.getTextSize(text, FONT, 1.0, thickness)
    return height / max(th, 1)


def put_text(
    image: np.ndarray, text: str, centre: tuple[float, float], height: float, color: RGB, thickness: int = 1
) -> list[float]:
    """Write ``text`` centred on ``centre`` with cap height ``height``; returns its bbox [x1, y1, x2, y2]."""
    scale = text_scale(text, height, thickness)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = centre[0] - tw / 2, centre[1] + th / 2
    cv2.putText(image, text, (round(x), round(y)), FONT, scale, color, thickness, cv2.LINE_AA)
    pad = thickness / 2 + 1
    return [x - pad, y - th - pad, x + tw + pad, y + base / 2 + pad]


def text_size(text: str, height: float, thickness: int = 1) -> tuple[float, float]:
    """(width, height) of ``text`` drawn with cap height ``height``."""
    scale = text_scale(text, height, thickness)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    return float(tw), float(th + base / 2)


def zoom_map(bbox: Sequence[float], factor: float) -> tuple[Affine, tuple[int, int]]:
    """Where a zoom of ``bbox`` by ``factor`` puts its parent's points, and the zoom's (width, height).

    Mirrors ``Canvas._zoom``: the region widens to whole pixels and the realised scale is the rounded
    size over the region, so expert calls land exactly where the canvas will show them.
    """
    x1, y1 = math.floor(bbox[0]), math.floor(bbox[1])
    x2, y2 = math.ceil(bbox[2]), math.ceil(bbox[3])
    width, height = max(1, round((x2 - x1) * factor)), max(1, round((y2 - y1) * factor))
    to_zoom = Affine.translate(-x1, -y1).then(Affine.scale(width / (x2 - x1), height / (y2 - y1)))
    return to_zoom, (width, height)


def clip_bbox(bbox: Sequence[float], width: float, height: float) -> list[float]:
    """``bbox`` limited to a ``width`` x ``height`` view."""
    return [
        min(max(bbox[0], 0.0), width),
        min(max(bbox[1], 0.0), height),
        min(max(bbox[2], 0.0), width),
        min(max(bbox[3], 0.0), height),
    ]


def pad_bbox(bbox: Sequence[float], pad: float) -> list[float]:
    """``bbox`` grown by ``pad`` on every side."""
    return [bbox[0] - pad, bbox[1] - pad, bbox[2] + pad, bbox[3] + pad]


def map_bbox(affine: Affine, bbox: Sequence[float]) -> list[float]:
    """An axis-aligned bbox through an axis-aligned affine map (corners re-ordered)."""
    xa, ya = affine(bbox[0], bbox[1])
    xb, yb = affine(bbox[2], bbox[3])
    return [min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)]


def rounded(values: Sequence[float], digits: int = 1) -> list[float]:
    """Coordinates rounded for a tool call (short to write, still sub-pixel)."""
    return [round(float(v), digits) for v in values]


def inside(bbox: Sequence[float], outer: Sequence[float], tolerance: float = 1e-6) -> bool:
    """Whether ``bbox`` lies within ``outer``."""
    return (
        bbox[0] >= outer[0] - tolerance
        and bbox[1] >= outer[1] - tolerance
        and bbox[2] <= outer[2] + tolerance
        and bbox[3] <= outer[3] + tolerance
    )
