"""Frozen-lake images in three looks, plus the augmentations used for training variety.

A map is a gym-style ``desc``: one string per row, ``S`` start (the player), ``G`` goal, ``H`` hole,
``F`` frozen (safe). Every renderer draws cell ``(r, c)`` at ``[c * cell, r * cell]`` with no margin, so
the expert can compute pixel boxes from the cell size alone.

- ``classic``: gym 0.26.2's ``FrozenLake`` ``rgb_array`` frame, which the VSP benchmark images are. Sprites
  are scaled nearest-neighbour to the cell and composited with pygame's own integer alpha formula, so a
  64 px render is pixel-identical to VSP's PNGs.
- ``gymnasium``: gymnasium 1.4's redrawn frame: flat ice tiles with position-seeded cracks, a dark hole
  tile, a start letter ``S``, a flag and letter ``G`` on the goal and a front-facing figure drawn at its
  native proportions (not stretched to the cell).
- ``vector``: flat OpenCV shapes: a circle for the player, a star for the goal, dark squares for holes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

Style = Literal["classic", "gymnasium", "vector"]
STYLES: tuple[Style, ...] = ("classic", "gymnasium", "vector")
NATIVE_CELL = 64  # gym and gymnasium draw 64 px cells up to 8x8 (window = min(64 * n, 512))
MAX_SIDE = 512
# The smallest augmented cell: two of Qwen's 28-px merged image tokens a side. Smaller cells put parts of
# two cells in most tokens, and a small policy then cannot read the map (docs/perception.md).
MIN_CELL = 56
ASSETS = Path(__file__).parent / "assets" / "frozenlake"
GRID_LINE = (180, 200, 230)  # gym's and gymnasium's 1 px cell outline

# Flat-style colour schemes: background, safe cell, grid line, hole, player, goal.
PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "ice": {
        "safe": (225, 238, 250),
        "line": (150, 170, 200),
        "hole": (30, 45, 80),
        "player": (220, 40, 40),
        "goal": (245, 180, 20),
    },
    "paper": {
        "safe": (250, 248, 240),
        "line": (120, 120, 120),
        "hole": (40, 40, 40),
        "player": (30, 100, 220),
        "goal": (40, 170, 70),
    },
    "mint": {
        "safe": (220, 245, 230),
        "line": (110, 160, 130),
        "hole": (50, 40, 90),
        "player": (240, 110, 30),
        "goal": (200, 30, 120),
    },
}


# --- sprites -------------------------------------------------------------------------------------


@cache
def _sprite(style: str, name: str) -> np.ndarray:
    """A vendored sprite as RGBA uint8 (read once)."""
    path = ASSETS / style / f"{name}.png"
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)


def _stretch(sprite: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize with pygame's source index ``floor(x * src / dst)``."""
    ys = np.arange(height) * sprite.shape[0] // height
    xs = np.arange(width) * sprite.shape[1] // width
    stretched: np.ndarray = sprite[ys[:, None], xs[None, :]]
    return stretched


def _blit(canvas: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    """Alpha-composite an RGBA sprite in place at (x, y), clipped to the canvas.

    pygame's formula ``d + (((s - d) * a + s) >> 8)`` (not ``/ 255``): this is what makes the classic
    render match VSP's PNGs to the last bit.
    """
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sprite.shape[1], w), min(y + sprite.shape[0], h)
    if x1 <= x0 or y1 <= y0:
        return
    src = sprite[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.int32)
    dst = canvas[y0:y1, x0:x1].astype(np.int32)
    rgb, alpha = src[..., :3], src[..., 3:4]
    canvas[y0:y1, x0:x1] = (dst + (((rgb - dst) * alpha + rgb) >> 8)).astype(np.uint8)


def _outline(canvas: np.ndarray, x: int, y: int, size: int) -> None:
    """pygame.draw.rect(..., width=1): a 1 px outline on the cell's own edge pixels."""
    canvas[y, x : x + size] = GRID_LINE
    canvas[y + size - 1, x : x + size] = GRID_LINE
    canvas[y : y + size, x] = GRID_LINE
    canvas[y : y + size, x + size - 1] = GRID_LINE


def _find(desc: Sequence[str], letter: str) -> tuple[int, int]:
    for r, row in enumerate(desc):
        if letter in row:
            return r, row.index(letter)
    raise ValueError(f"map has no {letter!r} tile")


# --- the three looks ---------------------------------------------------------------------------------


def render_classic(desc: Sequence[str], cell: int = NATIVE_CELL) -> np.ndarray:
    """gym 0.26.2's frame: snowy ice everywhere, ice holes, a present on the goal, the elf facing down.

    gym draws a stool on the start tile under the elf; the elf sprite covers it completely at every
    size, so it is not vendored.
    """
    rows, cols = len(desc), len(desc[0])
    canvas = np.zeros((rows * cell, cols * cell, 3), dtype=np.uint8)
    ice, hole, goal = (_stretch(_sprite("classic", n), cell, cell) for n in ("ice", "hole", "goal"))
    for r, row in enumerate(desc):
        for c, tile in enumerate(row):
            x, y = c * cell, r * cell
            _blit(canvas, ice, x, y)
            if tile == "H":
                _blit(canvas, hole, x, y)
            elif tile == "G":
                _blit(canvas, goal, x, y)
            _outline(canvas, x, y, cell)
    r, c = _find(desc, "S")
    _blit(canvas, _stretch(_sprite("classic", "elf_down"), cell, cell), c * cell, r * cell)
    return canvas


def _overlay(name: str, cell: int) -> np.ndarray:
    """gymnasium's overlays keep their proportions: art is drawn for a 64 px cell."""
    sprite = _sprite("gymnasium", name)
    scale = cell / NATIVE_CELL
    width, height = max(1, round(sprite.shape[1] * scale)), max(1, round(sprite.shape[0] * scale))
    return _stretch(sprite, width, height)


def render_gymnasium(desc: Sequence[str], cell: int = NATIVE_CELL) -> np.ndarray:
    """gymnasium 1.4's frame (see the module docstring for how it differs from ``classic``)."""
    rows, cols = len(desc), len(desc[0])
    canvas = np.zeros((rows * cell, cols * cell, 3), dtype=np.uint8)
    ice, hole = (_stretch(_sprite("gymnasium", n), cell, cell) for n in ("tile_ice", "tile_hole"))
    cracks = [_stretch(_sprite("gymnasium", n), cell, cell) for n in ("tile_ice_crack_a", "tile_ice_crack_b")]
    letter_s, letter_g, flag = (_overlay(n, cell) for n in ("letter_s", "letter_g", "goal_flag"))
    margin = round(cell * 0.06)
    for r, row in enumerate(desc):
        for c, tile in enumerate(row):
            x, y = c * cell, r * cell
            _blit(canvas, hole if tile == "H" else ice, x, y)
            if tile == "F":
                crack = (c * 3 + r * 5) % 7  # gymnasium's position-seeded crack pattern
                if crack < len(cracks):
                    _blit(canvas, cracks[crack], x, y)
            elif tile == "S":
                _blit(canvas, letter_s, x + margin, y + margin)
            elif tile == "G":
                fx = x + (cell - flag.shape[1]) // 2
                fy = y + cell - flag.shape[0] - round(cell * 0.12)
                _blit(canvas, flag, fx, fy)
                _blit(canvas, letter_g, x + margin, y + margin)
            _outline(canvas, x, y, cell)
    agent = _overlay("agent", cell)
    r, c = _find(desc, "S")
    _blit(canvas, agent, c * cell + (cell - agent.shape[1]) // 2, r * cell + (cell - agent.shape[0]) // 2)
    return canvas


def _star(cx: float, cy: float, outer: float) -> np.ndarray:
    """A five-pointed star's vertices, point up."""
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, outer, outer * 0.45)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def render_vector(desc: Sequence[str], cell: int = NATIVE_CELL, palette: str = "ice") -> np.ndarray:
    """Flat shapes on a grid: player circle, goal star, dark hole squares."""
    colors = PALETTES[palette]
    rows, cols = len(desc), len(desc[0])
    canvas = np.full((rows * cell, cols * cell, 3), colors["safe"], dtype=np.uint8)
    shift, one = 4, 16  # draw to 1/16 px so shapes stay centred at any cell size
    inset = max(2, round(cell * 0.1))
    for r, row in enumerate(desc):
        for c, tile in enumerate(row):
            x, y = c * cell, r * cell
            cx, cy = x + cell / 2, y + cell / 2
            if tile == "H":
                cv2.rectangle(canvas, (x + inset, y + inset), (x + cell - inset, y + cell - inset), colors["hole"], -1)
            elif tile == "G":
                pts = np.round((_star(cx, cy, cell * 0.38) - 0.5) * one).astype(np.int32)
                cv2.fillPoly(canvas, [pts], colors["goal"], cv2.LINE_AA, shift)
    r, c = _find(desc, "S")
    centre = (round((c * cell + cell / 2 - 0.5) * one), round((r * cell + cell / 2 - 0.5) * one))
    cv2.circle(canvas, centre, round(cell * 0.3 * one), colors["player"], -1, cv2.LINE_AA, shift)
    thickness = max(1, round(cell / 40))
    for k in range(rows + 1):
        y = min(k * cell, rows * cell - 1)
        cv2.line(canvas, (0, y), (cols * cell - 1, y), colors["line"], thickness)
    for k in range(cols + 1):
        x = min(k * cell, cols * cell - 1)
        cv2.line(canvas, (x, 0), (x, rows * cell - 1), colors["line"], thickness)
    return canvas


def render(desc: Sequence[str], style: Style, cell: int = NATIVE_CELL, palette: str = "ice") -> np.ndarray:
    """The map in one of ``STYLES`` as RGB uint8, ``cell`` px per grid cell."""
    if style == "classic":
        return render_classic(desc, cell)
    if style == "gymnasium":
        return render_gymnasium(desc, cell)
    if style == "vector":
        return render_vector(desc, cell, palette)
    raise ValueError(f"unknown frozenlake style {style!r}; use one of {', '.join(STYLES)}")


# --- augmentations -------------------------------------------------------------------------------------


def color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float) -> np.ndarray:
    """Scale brightness, contrast (around the mean) and saturation by factors near 1; rotate hue by degrees."""
    out = image.astype(np.float32) * brightness
    out = (out - out.mean()) * contrast + out.mean()
    gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = gray[..., None] + (out - gray[..., None]) * saturation
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(hue / 2)) % 180).astype(np.uint8)  # OpenCV hue is 0-179
    return np.ascontiguousarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode as JPEG at ``quality`` and decode again (compression artefacts, deterministic)."""
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - we just encoded it
        raise RuntimeError("JPEG decoding failed")
    return np.ascontiguousarray(decoded[:, :, ::-1])


def sample_augment(rng: np.random.Generator, size: int, probability: float = 0.3) -> dict[str, Any]:
    """Draw the augmentations for a ``size`` x ``size`` map; each applies with ``probability``.

    Returns ``{"cell": int | None, "jitter": {...} | None, "jpeg": int | None}``; ``None`` = not applied.
    Every draw is made whether or not it applies, so later draws do not shift with the outcome.
    """
    apply = rng.random(3) < probability
    cell = int(rng.integers(MIN_CELL, min(MAX_SIDE // size, 128) + 1))
    factors = rng.uniform(0.8, 1.2, size=3)
    hue = float(rng.uniform(-10, 10))
    quality = int(rng.integers(60, 96))
    jitter = {
        "brightness": round(float(factors[0]), 3),
        "contrast": round(float(factors[1]), 3),
        "saturation": round(float(factors[2]), 3),
        "hue": round(hue, 2),
    }
    return {
        "cell": cell if apply[0] else None,
        "jitter": jitter if apply[1] else None,
        "jpeg": quality if apply[2] else None,
    }


def apply_augment(image: np.ndarray, augment: Mapping[str, Any]) -> np.ndarray:
    """Colour jitter, then JPEG, as recorded by ``sample_augment`` (the cell size is applied when rendering)."""
    jitter = augment.get("jitter")
    if jitter:
        image = color_jitter(image, **jitter)
    quality = augment.get("jpeg")
    if quality:
        image = jpeg(image, quality)
    return image
