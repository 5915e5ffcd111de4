"""Coordinate conventions and the exact affine maps that tie every view back to the source image.

Coordinates are *continuous*: (0, 0) is the top-left corner of the top-left pixel and a W x H view
spans [0, W] x [0, H]; the centre of pixel (row i, column j) is (j + 0.5, i + 0.5). With this
convention a crop is a pure translation and a resize is a pure scale, so chains of crops and zooms
compose into one affine map with no half-pixel drift.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class Convention(enum.StrEnum):
    """How a model writes coordinates."""

    PIXELS = "pixels"  # absolute pixels of the view as the model saw it (Qwen2.5-VL grounding)
    NORM1000 = "norm1000"  # 0-1000 on both axes (Qwen2-VL, Qwen3-VL)
    UNIT = "unit"  # [0, 1] on both axes (Visual Sketchpad)

    @classmethod
    def parse(cls, value: str | Convention) -> Convention:
        """Accept a convention or its name (also "0-1000", "qwen3", "normalized")."""
        if isinstance(value, Convention):
            return value
        aliases = {"0-1000": cls.NORM1000, "qwen3": cls.NORM1000, "normalized": cls.UNIT, "abs": cls.PIXELS}
        key = value.strip().lower()
        if key in aliases:
            return aliases[key]
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown coordinate convention {value!r}; use one of {names}") from None

    def extent(self, width: int, height: int) -> tuple[float, float]:
        """The largest valid (x, y) in this convention for a view of the given size."""
        if self is Convention.PIXELS:
            return float(width), float(height)
        if self is Convention.NORM1000:
            return 1000.0, 1000.0
        return 1.0, 1.0

    def describe(self, width: int, height: int) -> str:
        """Human wording of the valid range, used in error messages for the model."""
        if self is Convention.PIXELS:
            return f"{width}x{height}"
        if self is Convention.NORM1000:
            return "0-1000 coordinates"
        return "0-1 coordinates"

    def to_pixels(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """Convert a point from this convention to view pixels."""
        ex, ey = self.extent(width, height)
        return x * width / ex, y * height / ey

    def from_pixels(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """Convert a point from view pixels to this convention."""
        ex, ey = self.extent(width, height)
        return x * ex / width, y * ey / height


@dataclass(frozen=True)
class Affine:
    """A 2-D affine map ``(x, y) -> (a*x + b*y + c, d*x + e*y + f)``.

    Views only ever need axis-aligned scale and translation, but keeping the general form makes
    composition and inversion one formula each.
    """

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    d: float = 0.0
    e: float = 1.0
    f: float = 0.0

    @staticmethod
    def translate(tx: float, ty: float) -> Affine:
        return Affine(c=tx, f=ty)

    @staticmethod
    def scale(sx: float, sy: float) -> Affine:
        return Affine(a=sx, e=sy)

    def then(self, outer: Affine) -> Affine:
        """The map that applies ``self`` first and ``outer`` second."""
        o = outer
        return Affine(
            a=o.a * self.a + o.b * self.d,
            b=o.a * self.b + o.b * self.e,
            c=o.a * self.c + o.b * self.f + o.c,
            d=o.d * self.a + o.e * self.d,
            e=o.d * self.b + o.e * self.e,
            f=o.d * self.c + o.e * self.f + o.f,
        )

    def inverse(self) -> Affine:
        det = self.a * self.e - self.b * self.d
        if math.isclose(det, 0.0, abs_tol=1e-15):
            raise ValueError("affine map is not invertible")
        a, b, d, e = self.e / det, -self.b / det, -self.d / det, self.a / det
        return Affine(a=a, b=b, c=-(a * self.c + b * self.f), d=d, e=e, f=-(d * self.c + e * self.f))

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        return self.a * x + self.b * y + self.c, self.d * x + self.e * y + self.f

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Map an (N, 2) array of points."""
        matrix = np.array([[self.a, self.b], [self.d, self.e]], dtype=np.float64)
        mapped: np.ndarray = np.asarray(points, dtype=np.float64) @ matrix.T + np.array([self.c, self.f])
        return mapped

    def as_list(self) -> list[float]:
        """Row-major 2x3 matrix, as saved in traces."""
        return [self.a, self.b, self.c, self.d, self.e, self.f]
