"""Needle in a haystack (V*-style): one tiny object in a large, busy image; what colour or number is it?

The image is a textured background crowded with coloured shapes, labelled tags and scraps of text.
One object, the target, is small (12-30 px depending on the level): a shape of the asked type, or a
tag carrying a number. The question names it by type and size ("the small star", "the small tag"),
and that is unambiguous: every other object of the asked type is at least ``DECOY_RATIO`` times
larger and differs in the asked attribute (colour or number). Nothing overlaps the target.

The expert searches like a person: a grid to name regions, a zoom into the cell holding the target
(at levels 3-5 a second, closer zoom if it is still small), a box labelled ``target``, the answer.
The reflective expert first zooms into a cell with one of the large look-alikes and boxes it as
``target``, notices the size is wrong, zooms into the right cell, and boxes ``target`` again there.
(A zoom makes a new view with no marks, so the second ``target`` box is on a different view: for this
family "redrawn under the same label" means the label is reused, not that a mark is replaced.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from sketchmind.protocols.base import ToolCall
from sketchmind.tasks._draw import (
    RGB,
    SHIFT,
    clip_bbox,
    fixed,
    map_bbox,
    pad_bbox,
    put_text,
    rounded,
    text_size,
    zoom_map,
)
from sketchmind.tasks.base import ExpertTurn, Puzzle, TaskFamily

COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 210, 30),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "pink": (240, 120, 190),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
}
ALIASES = {"violet": "purple", "magenta": "pink", "navy": "blue"}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
DECOY_RATIO = 3.0  # asked-type look-alikes are at least this many times the target's size
TEXT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWYZabdeghkmnqrtuwy0123456789"  # no x/X/o/O: they read as shapes
OUTLINE: RGB = (35, 35, 35)
TIGHT_BELOW = 64  # px: a target smaller than this in the cell zoom gets a second, closer zoom


@dataclass(frozen=True)
class LevelSpec:
    """What one difficulty level looks like."""

    size: int  # image side in px
    shape_px: int  # target shape size (bbox side)
    tag_px: int  # target tag height
    distractors: int  # shapes and tags of other kinds
    texts: int  # scraps of small text
    decoys: int  # large objects of the asked type
    grid: int  # the expert's search grid is grid x grid
    tight: bool  # the expert zooms a second time when the target is still small in the first zoom


LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(1024, 30, 28, 40, 25, 2, 3, False),
    2: LevelSpec(1280, 24, 24, 80, 50, 3, 3, False),
    3: LevelSpec(1536, 20, 22, 140, 90, 3, 4, True),
    4: LevelSpec(1792, 16, 20, 220, 140, 4, 4, True),
    5: LevelSpec(2048, 12, 18, 320, 200, 5, 4, True),
}


@dataclass(frozen=True)
class Thing:
    """One object in the picture: its kind (a shape, ``tag`` or ``text``), where it is, its size and value.

    ``size`` is the side of a shape's bbox or the height of a tag or text; ``value`` is a shape's
    colour name, a tag's number or the text itself.
    """

    kind: str
    bbox: tuple[float, float, float, float]
    size: float
    value: str

    @property
    def centre(self) -> tuple[float, float]:
        return (self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2


@dataclass(frozen=True)
class Scene:
    """The question (``asked`` is a shape name or ``tag``), the target, its look-alikes and everything else."""

    spec: LevelSpec
    asked: str
    target: Thing
    decoys: tuple[Thing, ...]
    things: tuple[Thing, ...]  # everything drawn, in drawing order (target last)


# --------------------------------------------------------------------------- shapes


def _unit_polygon(kind: str) -> np.ndarray:
    """The outline of a shape in a unit box centred on the origin."""
    if kind == "square":
        return np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])
    if kind == "diamond":
        return np.array([(0.0, -0.5), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0)])
    if kind == "triangle":
        return np.array([(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)])
    if kind == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        filled: np.ndarray = (pts - (lo + hi) / 2) / (hi - lo).max()  # fill the unit box
        return filled
    if kind == "cross":
        a = 0.17
        arm = [(-a, -0.5), (a, -0.5), (a, -a)]  # one arm; the other three are it turned by 90 degrees
        return np.array(
            [(rx * x - ry * y, ry * x + rx * y) for rx, ry in ((1, 0), (0, 1), (-1, 0), (0, -1)) for x, y in arm]
        )
    raise ValueError(f"no polygon for {kind!r}")


def _shape_bbox(centre: tuple[float, float], size: float) -> tuple[float, float, float, float]:
    half = size / 2
    return centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half


def _draw_shape(image: np.ndarray, thing: Thing) -> None:
    colour = COLOURS[thing.value]
    line = max(1, round(thing.size / 18))
    cx, cy = thing.centre
    if thing.kind == "circle":
        centre = tuple(int(v) for v in fixed([(cx, cy)])[0])
        r = round(thing.size / 2 * (1 << SHIFT))
        cv2.circle(image, centre, r, colour, cv2.FILLED, cv2.LINE_AA, SHIFT)
        cv2.circle(image, centre, r, OUTLINE, line, cv2.LINE_AA, SHIFT)
        return
    pts = fixed(_unit_polygon(thing.kind) * thing.size + (cx, cy))
    cv2.fillPoly(image, [pts], colour, cv2.LINE_AA, SHIFT)
    cv2.polylines(image, [pts], True, OUTLINE, line, cv2.LINE_AA, SHIFT)


def _tag_width(number: str, height: float) -> float:
    return text_size(number, 0.5 * height)[0] + 0.95 * height


def _draw_tag(image: np.ndarray, thing: Thing) -> None:
    """A luggage tag: cream card, dark border, a punched hole on the left, the number on the right."""
    x1, y1, x2, y2 = thing.bbox
    h = thing.size
    line = max(1, round(h / 16))
    corners = fixed([(x1 + 0.5, y1 + 0.5), (x2 - 0.5, y2 - 0.5)])
    p, q = tuple(int(v) for v in corners[0]), tuple(int(v) for v in corners[1])
    cv2.rectangle(image, p, q, (250, 247, 232), cv2.FILLED, cv2.LINE_AA, SHIFT)
    cv2.rectangle(image, p, q, OUTLINE, line, cv2.LINE_AA, SHIFT)
    hole = tuple(int(v) for v in fixed([(x1 + 0.3 * h, (y1 + y2) / 2)])[0])
    cv2.circle(image, hole, round(0.11 * h * (1 << SHIFT)), OUTLINE, line, cv2.LINE_AA, SHIFT)
    weight = 1 if h < 40 else 2
    put_text(image, thing.value, ((x1 + 0.55 * h + x2) / 2, (y1 + y2) / 2), 0.5 * h, (20, 20, 20), weight)


def _draw(image: np.ndarray, thing: Thing) -> None:
    if thing.kind == "tag":
        _draw_tag(image, thing)
    elif thing.kind == "text":
        weight = 1 if thing.size < 30 else 2
        colour = (60, 60, 70) if thing.value.isdigit() else (40, 40, 40)
        put_text(image, thing.value, thing.centre, thing.size, colour, weight)
    else:
        _draw_shape(image, thing)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Blotchy paper: two octaves of smooth noise, pale blobs and faint scribbled lines."""
    tint = rng.uniform(205, 240, 3)
    coarse = cv2.resize(rng.uniform(-28, 28, (6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.uniform(-10, 10, (64, 64, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = np.clip(tint + coarse + fine, 0, 255).astype(np.uint8)
    for _ in range(12):
        centre = (int(rng.integers(size)), int(rng.integers(size)))
        axes = (int(rng.integers(size // 12, size // 5)), int(rng.integers(size // 12, size // 5)))
        pale = tuple(int(v) for v in rng.uniform(200, 250, 3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, pale, cv2.FILLED, cv2.LINE_AA)
    for _ in range(size // 40):
        a = rng.uniform(0, size, 2)
        b = a + rng.uniform(-size / 6, size / 6, 2)
        grey = tuple(int(v) for v in rng.uniform(150, 200, 3))
        cv2.line(image, tuple(int(v) for v in a), tuple(int(v) for v in b), grey, 1, cv2.LINE_AA)
    return image


# --------------------------------------------------------------------------- scene


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two [x1, y1, x2, y2] boxes share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _make(kind: str, centre: tuple[float, float], size: float, value: str) -> Thing:
    """A thing of this kind centred at ``centre`` (tags and text are wider than they are tall)."""
    if kind == "tag":
        half_w = _tag_width(value, size) / 2
        bbox = (centre[0] - half_w, centre[1] - size / 2, centre[0] + half_w, centre[1] + size / 2)
    elif kind == "text":
        w, h = text_size(value, size, 1 if size < 30 else 2)
        bbox = (centre[0] - w / 2 - 1, centre[1] - h / 2 - 1, centre[0] + w / 2 + 1, centre[1] + h / 2 + 1)
    else:
        bbox = _shape_bbox(centre, size)
    return Thing(kind, bbox, size, value)


def _number(rng: np.random.Generator, digits: int) -> str:
    return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def _place(
    rng: np.random.Generator,
    size: int,
    kind: str,
    extent: float,
    value: str,
    avoid: list[tuple[float, float, float, float]],
    tries: int = 30,
) -> Thing | None:
    """A thing at a random spot inside the image and clear of every ``avoid`` box, or ``None``."""
    for _ in range(tries):
        margin = 1.3 * extent + 4  # enough for shapes; wider tags and text are checked below
        centre = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
        thing = _make(kind, centre, extent, value)
        inside = thing.bbox[0] >= 2 and thing.bbox[1] >= 2 and thing.bbox[2] <= size - 2 and thing.bbox[3] <= size - 2
        if inside and not any(_overlaps(thing.bbox, b) for b in avoid):
            return thing
    return None


def grid_cell(spec: LevelSpec, box: Sequence[float]) -> tuple[int, int]:
    """(row, column), numbered from 1 like the expert's grid, of the cell holding the centre of ``box``."""
    step, g = spec.size / spec.grid, spec.grid
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return min(g, int(cy // step) + 1), min(g, int(cx // step) + 1)


def cell_region(spec: LevelSpec, box: Sequence[float], pad: float) -> tuple[list[int], float]:
    """The grid cell holding ``box``, widened to show all of it (plus ``pad``), and a zoom factor of 2-4."""
    row, col = grid_cell(spec, box)
    step = spec.size / spec.grid
    grown = pad_bbox(box, pad)
    region = [
        max(0, math.floor(min((col - 1) * step, grown[0]))),
        max(0, math.floor(min((row - 1) * step, grown[1]))),
        min(spec.size, math.ceil(max(col * step, grown[2]))),
        min(spec.size, math.ceil(max(row * step, grown[3]))),
    ]
    side = max(region[2] - region[0], region[3] - region[1])
    return region, float(min(4, max(2, 1200 // side)))


def shows_target(spec: LevelSpec, decoy: Sequence[float], target: Sequence[float], size: float) -> bool:
    """Whether zooming into the look-alike's cell would also show (part of) the target."""
    region, _ = cell_region(spec, decoy, 0.5 * size)
    return _overlaps(region, pad_bbox(target, size))


def build_scene(spec: LevelSpec, rng: np.random.Generator) -> Scene:
    """Choose the question, place the target, its large look-alikes, distractors and text."""
    size = spec.size
    asked = SHAPES[int(rng.integers(len(SHAPES)))] if rng.random() < 0.65 else "tag"
    digits = 2 if size < 1500 else 3
    if asked == "tag":
        t_size, value = float(spec.tag_px), _number(rng, digits)
        others = [_number(rng, digits) for _ in range(spec.decoys + 20)]
        decoy_values = [v for v in others if v != value][: spec.decoys]
    else:
        t_size, value = float(spec.shape_px), str(rng.choice(list(COLOURS)))
        decoy_values = [str(rng.choice([c for c in COLOURS if c != value])) for _ in range(spec.decoys)]
    target = _place(rng, size, asked, t_size, value, [])
    if target is None:  # pragma: no cover - margins leave room for any target
        raise RuntimeError("could not place the target")
    keep_out = pad_bbox(target.bbox, 1.5 * t_size)
    clear = [(keep_out[0], keep_out[1], keep_out[2], keep_out[3])]
    decoys: list[Thing] = []
    for k, v in enumerate(decoy_values):
        extent = t_size * float(rng.uniform(DECOY_RATIO, DECOY_RATIO * 2))
        for _ in range(50):
            decoy = _place(rng, size, asked, extent, v, clear + [d.bbox for d in decoys])
            # The first look-alike sits in another part of the image: the reflective expert zooms into it.
            if decoy is not None and (k > 0 or not shows_target(spec, decoy.bbox, target.bbox, t_size)):
                decoys.append(decoy)
                break
    others_kinds = [k for k in (*SHAPES, "tag") if k != asked]
    things: list[Thing] = []
    for _ in range(spec.distractors):
        kind = others_kinds[int(rng.integers(len(others_kinds)))]
        extent = t_size * math.exp(rng.uniform(math.log(0.8), math.log(5.0)))
        v = _number(rng, digits) if kind == "tag" else str(rng.choice(list(COLOURS)))
        thing = _place(rng, size, kind, extent, v, clear)
        if thing is not None:
            things.append(thing)
    for _ in range(spec.texts):
        word = "".join(rng.choice(list(TEXT_ALPHABET), int(rng.integers(1, 5))))
        if word == value:
            continue
        thing = _place(rng, size, "text", t_size * float(rng.uniform(0.4, 1.6)), word, clear)
        if thing is not None:
            things.append(thing)
    order = [things[int(i)] for i in rng.permutation(len(things))]
    return Scene(spec, asked, target, tuple(decoys), (*order, *decoys, target))


def render_scene(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The puzzle image: background, then every thing in order (look-alikes and target on top)."""
    image = _background(scene.spec.size, rng)
    for thing in scene.things:
        _draw(image, thing)
    return image


# --------------------------------------------------------------------------- family


class Needle(TaskFamily):
    """Find one tiny object in a large busy image and read its colour or number."""

    name: ClassVar[str] = "needle"
    levels: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)

    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        """A puzzle whose asked object (type + "small") occurs exactly once in the image."""
        self.check_level(level)
        spec = LEVELS[level]
        scene = build_scene(spec, rng)
        image = render_scene(scene, rng)
        t = scene.target
        if scene.asked == "tag":
            question = "What number is written on the small tag? Answer with the number."
        else:
            question = f"What colour is the small {scene.asked}? Answer with one colour word."
        truth: dict[str, Any] = {
            "asked": scene.asked,
            "attribute": "number" if scene.asked == "tag" else "colour",
            "value": t.value,
            "bbox": rounded(t.bbox, 2),
            "size": t.size,
            "decoys": [{"bbox": rounded(d.bbox, 2), "size": round(d.size, 2), "value": d.value} for d in scene.decoys],
        }
        meta = {"size": spec.size, "objects": len(scene.things)}
        return Puzzle(self.name, level, index, question, t.value, image, truth, meta)

    def verify(self, puzzle: Puzzle, answer: str | None) -> bool:
        """The last colour word (or the last integer, for a tag) in the answer equals the truth."""
        if not isinstance(answer, str):
            return False
        truth = str(puzzle.truth["value"])
        if puzzle.truth["attribute"] == "number":
            numbers = re.findall(r"\d+", answer)
            return bool(numbers) and int(numbers[-1]) == int(truth)
        words = [ALIASES.get(w, w) for w in re.findall(r"[a-z]+", answer.lower())]
        colours = [w for w in words if w in COLOURS]
        return bool(colours) and colours[-1] == truth

    def expert(self, puzzle: Puzzle, *, reflective: bool = False, seed: int = 0) -> list[ExpertTurn]:
        """Grid, zoom into the target's cell (and closer at levels 3-5 if still small), box it, answer.

        The search is deterministic: ``seed`` changes nothing.
        """
        return _Searcher(puzzle).turns(reflective)


# --------------------------------------------------------------------------- expert


def _xy(point: tuple[float, float]) -> str:
    return f"({round(point[0])}, {round(point[1])})"


def _box_centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


class _Searcher:
    """Writes the expert's turns; every planned view is an integer region of the image zoomed by a factor."""

    def __init__(self, puzzle: Puzzle) -> None:
        self.spec = LEVELS[puzzle.level]
        self.truth = puzzle.truth
        self.asked = str(puzzle.truth["asked"])
        self.noun = self.asked  # "star", ..., or "tag": how the question names the target
        self.target = [float(v) for v in puzzle.truth["bbox"]]
        self.size = float(puzzle.truth["size"])
        self.value = str(puzzle.truth["value"])
        self.across = "tall" if self.asked == "tag" else "across"  # a tag's size is its height

    def tight_region(self, box: list[float], view_size: tuple[int, int]) -> tuple[list[int], float]:
        """A square about four target sizes wide around ``box`` (view pixels), and a zoom factor of 2-4."""
        cx, cy = _box_centre(box)
        half = max(40.0, 2.0 * max(box[2] - box[0], box[3] - box[1]))
        region = [math.floor(cx - half), math.floor(cy - half), math.ceil(cx + half), math.ceil(cy + half)]
        region = [max(0, region[0]), max(0, region[1]), min(view_size[0], region[2]), min(view_size[1], region[3])]
        side = max(region[2] - region[0], region[3] - region[1])
        return region, float(min(4, max(2, 480 // side)))

    def look(self) -> str:
        """What the target is, in the words of someone who can see it."""
        if self.asked == "tag":
            return f"a small tag with the number {self.value} on it"
        return f"a small {self.value} {self.noun}"

    def turns(self, reflective: bool) -> list[ExpertTurn]:
        """Grid, [a wrong cell and a wrong box], the right cell, [a closer zoom], the box, the answer."""
        size, g = self.spec.size, self.spec.grid
        turns = [
            ExpertTurn(
                f"The image is {size}x{size} and crowded with shapes, tags, text and texture. The small "
                f"{self.noun} I am looking for is only about {round(self.size)} px {self.across}, too small to make "
                f"out at this scale, so I lay a {g}x{g} grid over the image to search it region by region.",
                (ToolCall("grid", {"rows": g, "cols": g}),),
            )
        ]
        # A look-alike whose cell does not show the target (the generator makes the first one so).
        decoy = next(
            (d for d in self.truth["decoys"] if not shows_target(self.spec, d["bbox"], self.target, self.size)), None
        )
        if reflective and decoy is not None:
            turns += self.wrong_turns(decoy)
            size_ratio = float(decoy["size"]) / self.size
            lead = (
                f"Looking at the box: this {self.noun} is about {round(float(decoy['size']))} px "
                f"{self.across} in the original image, {size_ratio:.0f} times the size I am looking for. It is one "
                f"of the large "
                f"{self.noun}s, and there is no small {self.noun} in this cell. Back on the full image there is "
                f"another, much smaller {self.noun}-like mark"
            )
        else:
            lead = f"Scanning the grid, there is a tiny {self.noun}-like mark"
        return turns + self.find_turns(lead)

    def wrong_turns(self, decoy: dict[str, Any]) -> list[ExpertTurn]:
        """Zoom into a look-alike's cell and box it as the target: the mistake the next turn catches."""
        box = [float(v) for v in decoy["bbox"]]
        row, col = grid_cell(self.spec, box)
        region, factor = cell_region(self.spec, box, 0.5 * self.size)
        to_zoom, view_size = zoom_map(region, factor)
        in_zoom = map_bbox(to_zoom, box)
        wrong_box = rounded(clip_bbox(pad_bbox(in_zoom, 0.1 * self.size * factor), *view_size))
        attribute = "number" if self.asked == "tag" else "colour"
        return [
            ExpertTurn(
                f"Scanning the grid, there is a {self.noun} in row {row}, column {col}. I zoom {factor:g}x into that "
                f"cell to read its {attribute}.",
                (ToolCall("zoom", {"view": 1, "bbox": region, "factor": factor}),),
            ),
            ExpertTurn(
                f"There is a {self.noun} near {_xy(_box_centre(in_zoom))} in this view. I box it as the target.",
                (ToolCall("box", {"bbox": wrong_box, "label": "target"}),),
            ),
        ]

    def find_turns(self, lead: str) -> list[ExpertTurn]:
        """Zoom into the target's cell (from view 1), zoom closer if needed, box it and answer."""
        row, col = grid_cell(self.spec, self.target)
        region, factor = cell_region(self.spec, self.target, 0.5 * self.size)
        to_zoom, view_size = zoom_map(region, factor)
        turns = [
            ExpertTurn(
                f"{lead} in row {row}, column {col}. I zoom {factor:g}x into that cell.",
                (ToolCall("zoom", {"view": 1, "bbox": region, "factor": factor}),),
            )
        ]
        box, scale = map_bbox(to_zoom, self.target), to_zoom.a
        if self.spec.tight and max(box[2] - box[0], box[3] - box[1]) < TIGHT_BELOW:
            tight, factor2 = self.tight_region(box, view_size)
            turns.append(
                ExpertTurn(
                    f"In the zoomed cell something small and {self.noun}-shaped sits near {_xy(_box_centre(box))}; "
                    f"it is still too small to read, so I zoom {factor2:g}x around it.",
                    (ToolCall("zoom", {"bbox": tight, "factor": factor2}),),
                )
            )
            to_tight, view_size = zoom_map(tight, factor2)
            box, scale = map_bbox(to_tight, box), scale * to_tight.a
        target_box = rounded(clip_bbox(pad_bbox(box, 0.1 * self.size * scale), *view_size))
        turns.append(
            ExpertTurn(
                f"Now it is clear: {self.look()}, about {round(self.size)} px {self.across} in the original image "
                f"and much smaller than the other {self.noun}s. I box it.",
                (ToolCall("box", {"bbox": target_box, "label": "target"}),),
            )
        )
        final = (
            f"The small tag reads {self.value}." if self.asked == "tag" else f"The small {self.noun} is {self.value}."
        )
        turns.append(ExpertTurn(final, answer=self.value))
        return turns
