"""Path tracing: tangled curves from lettered starts to numbered ends; which end does one start reach?

Every curve is a centripetal Catmull-Rom spline from a start on the left edge, through random
waypoints, to an end on the right edge; ends are a random permutation of starts, so each start
reaches a distinct end. Curves are placed one at a time and rejected when they would make the
puzzle ambiguous: two curves that run alongside each other, cross at a shallow angle, touch without
crossing, cross near another crossing, or pass over another curve's label. From level 2 on all
curves share one colour, so only following the line answers the question; levels 4-5 use thin lines
on a large image, so the expert zooms into each stretch it traces.

The expert traces like a person: box the start label, follow the curve in pieces (``trace1``,
``trace2``, ...) and box the end label it arrives at. The reflective expert takes the wrong branch at
one crossing, notices the kink, and redraws that piece under the same label.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import cv2
import numpy as np

from sketchmind.coords import Affine
from sketchmind.protocols.base import ToolCall
from sketchmind.tasks._draw import RGB, SHIFT, clip_bbox, fixed, map_bbox, pad_bbox, put_text, rounded, zoom_map
from sketchmind.tasks.base import ExpertTurn, Puzzle, TaskFamily

SPACING = 6.0  # px between curve samples used for geometry checks and traces
DENSE = 1.5  # px between samples used for rendering
MAX_SLOPE = 1.3  # |dy/dx| between waypoints
MIN_ANGLE = math.radians(30)  # shallower crossings are hard to follow even for a person
ATTEMPTS = 200  # scene attempts before giving up (never reached in practice)
CURVE_TRIES = 40  # tries per curve before restarting the puzzle

# Distinct line colours for level 1 (the only level where colour may help).
LINE_COLOURS: tuple[RGB, ...] = ((215, 40, 40), (30, 90, 220), (20, 150, 60), (150, 50, 170), (230, 120, 0))
# One shared ink per puzzle from level 2 on.
INKS: tuple[RGB, ...] = ((25, 25, 25), (30, 40, 110), (70, 45, 30), (20, 80, 60))


@dataclass(frozen=True)
class LevelSpec:
    """What one difficulty level looks like."""

    size: int  # image side in px
    curves: int
    thickness: int  # line width in px
    waypoints: int  # random interior points per curve: more means more crossings
    min_crossings: int  # the asked curve crosses others at least this often
    min_total: int  # crossings in the whole picture, at least
    pieces: int  # stretches the expert traces
    zoom: bool  # the expert zooms into each stretch
    label_px: int  # cap height of the start and end labels
    coloured: bool  # each curve has its own colour


LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(512, 3, 4, 2, 1, 2, 3, False, 18, True),
    2: LevelSpec(640, 4, 3, 3, 2, 3, 3, False, 16, False),
    3: LevelSpec(800, 5, 3, 3, 3, 5, 4, False, 16, False),
    4: LevelSpec(1280, 6, 2, 5, 5, 9, 5, True, 13, False),
    5: LevelSpec(1600, 8, 2, 6, 6, 20, 5, True, 13, False),
}


# --------------------------------------------------------------------------- geometry


def catmull_rom(controls: np.ndarray, spacing: float) -> np.ndarray:
    """A centripetal Catmull-Rom spline through ``controls``, resampled every ``spacing`` px of arc."""
    pts = np.asarray(controls, dtype=np.float64)
    padded = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    pieces = []
    for i in range(len(pts) - 1):
        p0, p1, p2, p3 = padded[i : i + 4]
        t0 = 0.0
        t1 = t0 + math.sqrt(float(np.hypot(*(p1 - p0))))
        t2 = t1 + math.sqrt(float(np.hypot(*(p2 - p1))))
        t3 = t2 + math.sqrt(float(np.hypot(*(p3 - p2))))
        t = np.linspace(t1, t2, 64, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        pieces.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    pieces.append(pts[-1:])
    return resample(np.vstack(pieces), spacing)


def arc_lengths(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length at each point (0 at the first)."""
    steps = np.hypot(*np.diff(points, axis=0).T)
    return np.concatenate([[0.0], np.cumsum(steps)])


def resample(points: np.ndarray, spacing: float) -> np.ndarray:
    """Points evenly spaced along the polyline (first and last kept)."""
    s = arc_lengths(points)
    n = max(2, round(s[-1] / spacing) + 1)
    at = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(at, s, points[:, 0]), np.interp(at, s, points[:, 1])], axis=1)


@dataclass(frozen=True)
class Crossing:
    """Where two polylines cross: fractional sample positions on each, the point and the angle."""

    at: float  # position along the first polyline, in sample indices
    other_at: float  # position along the second polyline
    point: tuple[float, float]
    angle: float  # radians in [0, pi/2]
    other: int = -1  # index of the other curve, where known


def _segment_hits(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segment pairs of polylines ``p`` and ``q`` that properly intersect: (i, j, t, u) arrays."""
    a, r = p[:-1, None, :], np.diff(p, axis=0)[:, None, :]
    c, s = q[None, :-1, :], np.diff(q, axis=0)[None, :, :]
    denom = r[..., 0] * s[..., 1] - r[..., 1] * s[..., 0]
    qp = c - a
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (qp[..., 0] * s[..., 1] - qp[..., 1] * s[..., 0]) / denom
        u = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / denom
    i, j = np.nonzero((denom != 0) & (t >= 0) & (t < 1) & (u >= 0) & (u < 1))
    return i, j, t[i, j], u[i, j]


def _chunk_boxes(points: np.ndarray, chunk: int) -> np.ndarray:
    """Bounding boxes (x1, y1, x2, y2) of consecutive runs of ``chunk`` segments."""
    starts = np.arange(0, len(points) - 1, chunk)
    return np.asarray(
        [[*points[s : s + chunk + 1].min(axis=0), *points[s : s + chunk + 1].max(axis=0)] for s in starts]
    )


def crossings(p: np.ndarray, q: np.ndarray, chunk: int = 24) -> list[Crossing]:
    """Every proper intersection of polylines ``p`` and ``q``, in order along ``p``.

    Only chunks of segments whose bounding boxes overlap are tested segment by segment.
    """
    bp, bq = _chunk_boxes(p, chunk), _chunk_boxes(q, chunk)
    overlap = (
        (bp[:, None, 0] <= bq[None, :, 2])
        & (bq[None, :, 0] <= bp[:, None, 2])
        & (bp[:, None, 1] <= bq[None, :, 3])
        & (bq[None, :, 1] <= bp[:, None, 3])
    )
    found = []
    for ci, cj in zip(*np.nonzero(overlap), strict=True):
        i0, j0 = int(ci) * chunk, int(cj) * chunk
        pi, qj = p[i0 : i0 + chunk + 1], q[j0 : j0 + chunk + 1]
        for i, j, t, u in zip(*_segment_hits(pi, qj), strict=True):
            ri, sj = pi[i + 1] - pi[i], qj[j + 1] - qj[j]
            cos = abs(float(ri @ sj)) / (float(np.hypot(*ri) * np.hypot(*sj)) + 1e-12)
            point = pi[i] + t * ri
            angle = math.acos(min(1.0, cos))
            found.append(Crossing(i0 + i + float(t), j0 + j + float(u), (float(point[0]), float(point[1])), angle))
    return sorted(found, key=lambda x: x.at)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where ``mask`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(edges[k]), int(edges[k + 1])) for k in range(0, len(edges), 2)]


def _close_runs_ok(p: np.ndarray, q: np.ndarray, found: list[Crossing], close: float) -> bool:
    """Wherever ``p`` comes within ``close`` px of ``q`` there is exactly one short crossing.

    That rules out curves that touch without crossing or run alongside each other.
    """
    gaps = np.hypot(p[:, None, 0] - q[None, :, 0], p[:, None, 1] - q[None, :, 1]).min(axis=1)
    longest = 2 * close / math.sin(MIN_ANGLE) + 2 * SPACING
    for lo, hi in _runs(gaps < close):
        inside = [x for x in found if lo - 1 <= x.at <= hi]
        if len(inside) != 1 or (hi - lo) * SPACING > longest:
            return False
    return True


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Curve:
    """One line of the puzzle: its labels, spline control points and samples every ``SPACING`` px."""

    start: str
    end: str
    controls: np.ndarray
    points: np.ndarray


@dataclass(frozen=True)
class Scene:
    """Everything drawn: the curves and where their start and end labels are written."""

    spec: LevelSpec
    curves: tuple[Curve, ...]
    start_boxes: dict[str, list[float]]
    end_boxes: dict[str, list[float]]


def _layout(spec: LevelSpec, rng: np.random.Generator) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Start and end anchor points: evenly spread down the left and right edges, with a little jitter."""
    size, n = spec.size, spec.curves
    margin = 0.08 * size
    step = (size - 2 * margin) / max(n - 1, 1)
    left, right = 2.6 * spec.label_px + 8, size - 2.6 * spec.label_px - 8

    def spread() -> list[float]:
        ys = margin + np.arange(n) * step + rng.uniform(-0.15, 0.15, n) * step
        return [float(y) for y in np.clip(ys, margin, size - margin)]

    starts = [(left, y) for y in spread()]
    ends = [(right, y) for y in spread()]
    return starts, ends


def _controls(
    spec: LevelSpec, start: tuple[float, float], end: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Spline control points: a short horizontal lead at each end and random waypoints between.

    Waypoints wander around the straight start-to-end line but no segment is steeper than
    ``MAX_SLOPE``: near-vertical strokes would cross each other at hopelessly shallow angles.
    """
    size = spec.size
    lead = 0.05 * size
    x_lo, x_hi = start[0] + 0.15 * size, end[0] - 0.15 * size
    k = spec.waypoints
    slots = np.linspace(x_lo, x_hi, k)
    jitter = (x_hi - x_lo) / max(k - 1, 1) * 0.2
    xs = np.sort(slots + rng.uniform(-jitter, jitter, k))
    wander = rng.uniform(-0.3, 0.3, k) * size
    lo_y, hi_y = 0.06 * size, 0.94 * size
    x_prev, y_prev = start[0] + lead, start[1]
    x_last, y_last = end[0] - lead, end[1]
    ys = []
    for x, w in zip(xs, wander, strict=True):
        # Wander around the straight line, but stay reachable from the last point and able to reach the end.
        reach, left = MAX_SLOPE * (x - x_prev), MAX_SLOPE * (x_last - x)
        lo = max(lo_y, y_prev - reach, y_last - left)
        hi = min(hi_y, y_prev + reach, y_last + left)
        line = start[1] + (end[1] - start[1]) * (x - start[0]) / (end[0] - start[0])
        y = float(np.clip(line + w, lo, hi))
        ys.append(y)
        x_prev, y_prev = float(x), y
    pts = [start, (start[0] + lead, start[1]), *zip(xs, ys, strict=True), (x_last, y_last), end]
    return np.round(np.asarray(pts, dtype=np.float64), 2)


def _label_boxes(spec: LevelSpec, anchors: list[tuple[float, float]], side: str) -> list[list[float]]:
    """Where each label is written: left of a start anchor, right of an end anchor."""
    boxes = []
    h = spec.label_px
    for x, y in anchors:
        cx = x - 1.4 * h - 4 if side == "left" else x + 1.4 * h + 4
        boxes.append([cx - 0.9 * h, y - 0.9 * h, cx + 0.9 * h, y + 0.9 * h])
    return boxes


def _clear_of(points: np.ndarray, boxes: list[list[float]], pad: float) -> bool:
    """No point of the curve inside any (padded) box."""
    for b in boxes:
        x1, y1, x2, y2 = pad_bbox(b, pad)
        if np.any((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2)):
            return False
    return True


def build_scene(spec: LevelSpec, rng: np.random.Generator) -> Scene:
    """Place every curve so that the puzzle is unambiguous (see the module docstring)."""
    n = spec.curves
    close = 3 * spec.thickness + 6
    letters = [chr(ord("A") + i) for i in range(n)]
    numbers = [str(i + 1) for i in range(n)]
    for _ in range(ATTEMPTS):
        starts, ends = _layout(spec, rng)
        target = rng.permutation(n)  # curve i (start letters[i]) ends at numbers[target[i]]
        start_boxes = _label_boxes(spec, starts, "left")
        end_boxes = _label_boxes(spec, ends, "right")
        placed: list[Curve] = []
        points_at: list[tuple[float, float]] = []  # all crossing points so far
        for i in range(n):
            e = int(target[i])
            others = [b for k, b in enumerate(start_boxes) if k != i] + [b for k, b in enumerate(end_boxes) if k != e]
            anchors = [np.asarray(starts[k]) for k in range(n) if k != i] + [
                np.asarray(ends[k]) for k in range(n) if k != e
            ]
            for _try in range(CURVE_TRIES):
                controls = _controls(spec, starts[i], ends[e], rng)
                pts = catmull_rom(controls, SPACING)
                if pts[:, 1].min() < 4 or pts[:, 1].max() > spec.size - 4:
                    continue
                if not _clear_of(pts, others, close):
                    continue
                if any(np.hypot(*(pts - a).T).min() < 2 * close for a in anchors):
                    continue
                new_points = _accept(pts, placed, points_at, close)
                if new_points is not None:
                    placed.append(Curve(letters[i], numbers[e], controls, pts))
                    points_at.extend(new_points)
                    break
            else:
                break
        if len(placed) == n:
            return Scene(
                spec,
                tuple(placed),
                {letters[i]: start_boxes[i] for i in range(n)},
                {numbers[i]: end_boxes[i] for i in range(n)},
            )
    raise RuntimeError("could not place unambiguous curves")  # pragma: no cover


def _accept(
    pts: np.ndarray, placed: list[Curve], points_at: list[tuple[float, float]], close: float
) -> list[tuple[float, float]] | None:
    """The new crossing points if curve ``pts`` can join ``placed``, else ``None``."""
    found = [crossings(pts, other.points) for other in placed]
    # Cheapest tests first: a shallow crossing anywhere, then crossings bunched into knots.
    if any(x.angle < MIN_ANGLE for pair in found for x in pair):
        return None
    new = [x.point for pair in found for x in pair]
    if new:
        fresh = np.asarray(new)
        everything = np.asarray(points_at + new, dtype=np.float64)
        d = np.hypot(fresh[:, None, 0] - everything[None, :, 0], fresh[:, None, 1] - everything[None, :, 1])
        d[np.arange(len(new)), len(points_at) + np.arange(len(new))] = np.inf  # each point against itself
        if d.min() < 3 * close:
            return None
    if any(not _close_runs_ok(pts, other.points, pair, close) for other, pair in zip(placed, found, strict=True)):
        return None
    return new


def curve_crossings(scene: Scene, index: int) -> list[Crossing]:
    """The crossings of curve ``index`` with every other curve, in order along it (``at`` on this curve)."""
    mine = scene.curves[index].points
    found = [replace(x, other=k) for k, c in enumerate(scene.curves) if k != index for x in crossings(mine, c.points)]
    return sorted(found, key=lambda x: x.at)


def render_scene(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The puzzle image: off-white paper, the curves, start and end dots, labels."""
    spec = scene.spec
    image = np.full((spec.size, spec.size, 3), (252, 251, 247), dtype=np.uint8)
    ink = INKS[int(rng.integers(len(INKS)))]
    colours = [LINE_COLOURS[int(k)] for k in rng.permutation(len(LINE_COLOURS))]
    for i, curve in enumerate(scene.curves):
        colour = colours[i % len(colours)] if spec.coloured else ink
        dense = catmull_rom(curve.controls, DENSE)
        cv2.polylines(image, [fixed(dense)], False, colour, spec.thickness, cv2.LINE_AA, SHIFT)
        for x, y in (curve.points[0], curve.points[-1]):
            r = round((spec.thickness + 2) * (1 << SHIFT))
            cv2.circle(image, tuple(int(v) for v in fixed([(x, y)])[0]), r, colour, cv2.FILLED, cv2.LINE_AA, SHIFT)
    weight = 2 if spec.label_px >= 16 else 1
    for name, box in [*scene.start_boxes.items(), *scene.end_boxes.items()]:
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        put_text(image, name, centre, spec.label_px, (10, 10, 10), weight)
    return image


# --------------------------------------------------------------------------- family


def _scene_from_truth(puzzle: Puzzle) -> Scene:
    """Rebuild the scene (curve samples) from the control points stored in the puzzle's truth."""
    spec = LEVELS[puzzle.level]
    curves = tuple(
        Curve(c["start"], c["end"], np.asarray(c["controls"]), catmull_rom(np.asarray(c["controls"]), SPACING))
        for c in puzzle.truth["curves"]
    )
    return Scene(spec, curves, dict(puzzle.truth["start_boxes"]), dict(puzzle.truth["end_boxes"]))


class PathTrace(TaskFamily):
    """Follow one tangled line from its lettered start to its numbered end."""

    name: ClassVar[str] = "pathtrace"
    levels: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)

    def generate(self, rng: np.random.Generator, level: int, index: int = 0) -> Puzzle:
        """A puzzle whose asked curve crosses others at least ``LEVELS[level].min_crossings`` times."""
        self.check_level(level)
        spec = LEVELS[level]
        for _ in range(ATTEMPTS):
            scene = build_scene(spec, rng)
            counts = [len(curve_crossings(scene, i)) for i in range(spec.curves)]
            candidates = [i for i, c in enumerate(counts) if c >= spec.min_crossings]
            if candidates and sum(counts) // 2 >= spec.min_total:
                break
        else:  # pragma: no cover - a few scenes at most are ever redrawn
            raise RuntimeError(f"no {self.name} level {level} scene with enough crossings")
        asked = candidates[int(rng.integers(len(candidates)))]
        curve = scene.curves[asked]
        image = render_scene(scene, rng)
        question = (
            f"Each line starts at a letter on the left and ends at a number on the right. "
            f"Where does the line from {curve.start} end? Answer with the end label."
        )
        truth: dict[str, Any] = {
            "start": curve.start,
            "end": curve.end,
            "crossings": counts[asked],
            "curves": [{"start": c.start, "end": c.end, "controls": c.controls.tolist()} for c in scene.curves],
            "start_boxes": {k: rounded(v, 2) for k, v in scene.start_boxes.items()},
            "end_boxes": {k: rounded(v, 2) for k, v in scene.end_boxes.items()},
        }
        meta = {"size": spec.size, "curves": spec.curves, "thickness": spec.thickness, "coloured": spec.coloured}
        return Puzzle(self.name, level, index, question, curve.end, image, truth, meta)

    def verify(self, puzzle: Puzzle, answer: str | None) -> bool:
        """The last number in the answer is the asked line's end label ("3", "End 3", "it ends at 3")."""
        if not isinstance(answer, str):
            return False
        numbers = re.findall(r"\d+", answer)
        return bool(numbers) and int(numbers[-1]) == int(puzzle.truth["end"])

    def expert(self, puzzle: Puzzle, *, reflective: bool = False, seed: int = 0) -> list[ExpertTurn]:
        """Box the start, trace the line piece by piece (zooming at levels 4-5), box the end, answer."""
        scene = _scene_from_truth(puzzle)
        index = next(i for i, c in enumerate(scene.curves) if c.start == puzzle.truth["start"])
        return _Tracer(scene, index, np.random.default_rng(seed)).turns(reflective)


# --------------------------------------------------------------------------- expert


def _heading(dx: float, dy: float) -> str:
    """Compass wording of an image-space direction (y grows downwards)."""
    angle = math.degrees(math.atan2(-dy, dx))
    names = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
    return names[round(angle / 45) % 8]


def _xy(point: np.ndarray | tuple[float, float]) -> str:
    return f"({round(float(point[0]))}, {round(float(point[1]))})"


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _path_points(points: np.ndarray, size: tuple[int, int], most: int = 40) -> list[list[float]]:
    """Path vertices for a call: a few dozen points evenly along the stretch, rounded, inside the view."""
    n = int(min(most, max(8, len(points) // 2)))
    pts = resample(points, max(arc_lengths(points)[-1] / (n - 1), 1e-6))
    pts[:, 0] = np.clip(pts[:, 0], 0, size[0])
    pts[:, 1] = np.clip(pts[:, 1], 0, size[1])
    return [rounded(p) for p in pts]


@dataclass
class _Piece:
    """One stretch of the trace: its sample range and the crossings on it."""

    lo: int
    hi: int
    crossings: list[Crossing]


@dataclass
class _Zoomed:
    """A zoom that piece was traced on: the view holding the trace, the map into it, its size."""

    view: int
    to_zoom: Affine
    size: tuple[int, int]


@dataclass
class _Tracer:
    """Writes the expert's turns, numbering views as the canvas will (one new view per call)."""

    scene: Scene
    index: int
    rng: np.random.Generator
    views: int = 1  # view 1 is the input
    overview: int = 1  # the latest full-size view with the trace so far
    zoomed: dict[int, _Zoomed] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = self.scene.spec
        self.curve = self.scene.curves[self.index]
        self.points = self.curve.points
        self.crossings = curve_crossings(self.scene, self.index)
        self.full = (self.spec.size, self.spec.size)

    def add(self, calls: list[ToolCall], name: str, arguments: dict[str, Any]) -> int:
        """Append a call; return the index of the view it will make."""
        calls.append(ToolCall(name, arguments))
        self.views += 1
        return self.views

    # -- planning

    def pieces(self) -> list[_Piece]:
        """``spec.pieces`` stretches of about equal length, with boundaries moved away from crossings."""
        n, k = len(self.points), self.spec.pieces
        at = np.asarray([x.at for x in self.crossings])
        bounds = [0]
        for b in np.linspace(0, n - 1, k + 1)[1:-1]:
            lo = max(bounds[-1] + 4, int(b - 0.15 * n / k))
            window = np.arange(lo, max(lo, min(n - 5, int(b + 0.15 * n / k))) + 1)
            clearance = np.abs(window[:, None] - at[None, :]).min(axis=1) if len(at) else np.zeros(len(window))
            bounds.append(int(window[np.argmax(clearance)]))
        bounds.append(n - 1)
        return [_Piece(lo, hi, [x for x in self.crossings if lo <= x.at < hi]) for lo, hi in itertools.pairwise(bounds)]

    def wrong_branch(self, pieces: list[_Piece]) -> tuple[int, Crossing, np.ndarray]:
        """A piece, a crossing on it, and a trace of that piece that turns onto the other line there.

        Prefers crossings well inside a piece, so that the wrong stretch is long enough to see.
        """
        options = [
            (min(x.at - piece.lo, piece.hi - x.at) / (piece.hi - piece.lo), p, x)
            for p, piece in enumerate(pieces)
            for x in piece.crossings
        ]
        best = max(o[0] for o in options)
        good = [o for o in options if o[0] >= min(0.25, best)]
        _, p, x = good[int(self.rng.integers(len(good)))]
        piece = pieces[p]
        other = self.scene.curves[x.other].points
        before = np.vstack([self.points[piece.lo : int(x.at) + 1], [x.point]])
        j = int(x.other_at) + 1
        steps = max(2, round(piece.hi - x.at))
        after = other[j : j + steps]
        return p, x, np.vstack([before, after]) if len(after) else before

    # -- turns

    def turns(self, reflective: bool) -> list[ExpertTurn]:
        """The whole trajectory: one turn per piece (plus the fix when reflective), then the answer."""
        pieces = self.pieces()
        wrong = self.wrong_branch(pieces) if reflective and self.crossings else None
        turns: list[ExpertTurn] = []
        for p in range(len(pieces)):
            last = p == len(pieces) - 1
            if wrong is not None and wrong[0] == p:
                turns.append(self.piece_turn(p, pieces, wrong[2], last=False))
                turns.append(self.fix_turn(p, pieces, wrong[1], wrong[2], last=last))
            else:
                turns.append(self.piece_turn(p, pieces, None, last=last))
        start, end, n = self.curve.start, self.curve.end, len(self.crossings)
        times = "once" if n == 1 else f"{n} times"
        turns.append(
            ExpertTurn(
                f"The trace leaves {start}, crosses other lines {times} without switching lines at any crossing, "
                f"and arrives at end {end}. So the line from {start} ends at {end}.",
                answer=end,
            )
        )
        return turns

    def describe(self, piece: _Piece, points: np.ndarray) -> str:
        """What a stretch does, in words a person would use."""
        a, m, b = points[0], points[len(points) // 2], points[-1]
        first, second = _heading(*(m - a)), _heading(*(b - m))
        route = first if first == second else f"{first}, then {second},"
        text = f"From {_xy(a)} the line heads {route} to {_xy(b)}"
        if not piece.crossings:
            return text + " without crossing any other line."
        where = ", ".join(_xy(x.point) for x in piece.crossings)
        n = len(piece.crossings)
        lines = "another line" if n == 1 else f"{n} other lines"
        return f"{text}, crossing {lines} near {where}; at each crossing I keep to the stroke that continues smoothly."

    def describe_wrong(self, points: np.ndarray) -> str:
        """The mistaken trace, described as confidently as a right one: the tracer has not noticed yet."""
        a, b = points[0], points[-1]
        return f"From {_xy(a)} the line heads {_heading(*(b - a))} to {_xy(b)}."

    def zoom_region(self, points: np.ndarray, boxes: list[list[float]]) -> tuple[list[int], float]:
        """An integer region around a stretch and any label boxes it must show, and a zoom factor (2 or 3)."""
        xs = [points[:, 0].min(), points[:, 0].max(), *(b[0] for b in boxes), *(b[2] for b in boxes)]
        ys = [points[:, 1].min(), points[:, 1].max(), *(b[1] for b in boxes), *(b[3] for b in boxes)]
        pad, size = 0.04 * self.spec.size, self.spec.size
        region = [
            max(0, math.floor(min(xs) - pad)),
            max(0, math.floor(min(ys) - pad)),
            min(size, math.ceil(max(xs) + pad)),
            min(size, math.ceil(max(ys) + pad)),
        ]
        side = max(region[2] - region[0], region[3] - region[1])
        return region, 3.0 if side * 3 <= 1536 else 2.0

    def box_end(self, calls: list[ToolCall], to_view: Affine, size: tuple[int, int]) -> int:
        """Box the end label on the latest view."""
        box = map_bbox(to_view, self.scene.end_boxes[self.curve.end])
        return self.add(calls, "box", {"bbox": rounded(clip_bbox(pad_bbox(box, 2.0), *size)), "label": "end"})

    def draw(
        self, calls: list[ToolCall], p: int, points: np.ndarray, region: list[int] | None, factor: float, end: bool
    ) -> None:
        """Draw piece ``p``: on the overview, or zoomed (then mirrored onto the overview) at levels 4-5."""
        label = f"trace{p + 1}"
        if region is None:
            self.overview = self.add(calls, "path", {"points": _path_points(points, self.full), "label": label})
            if end:
                self.overview = self.box_end(calls, Affine(), self.full)
            return
        to_zoom, size = zoom_map(region, factor)
        self.add(calls, "zoom", {"view": self.overview, "bbox": region, "factor": factor})
        traced = self.add(calls, "path", {"points": _path_points(to_zoom.apply_points(points), size), "label": label})
        self.zoomed[p] = _Zoomed(traced, to_zoom, size)
        if end:
            self.box_end(calls, to_zoom, size)
        mirror = {"view": self.overview, "points": _path_points(points, self.full), "label": label}
        self.overview = self.add(calls, "path", mirror)

    def piece_turn(self, p: int, pieces: list[_Piece], wrong: np.ndarray | None, *, last: bool) -> ExpertTurn:
        """Trace piece ``p`` (the wrong branch if given); the first piece also boxes the start."""
        piece = pieces[p]
        correct = self.points[piece.lo : piece.hi + 1]
        points = correct if wrong is None else wrong
        calls: list[ToolCall] = []
        thought: list[str] = []
        if p == 0:
            box = self.scene.start_boxes[self.curve.start]
            start_box = rounded(clip_bbox(pad_bbox(box, 2.0), *self.full))
            self.overview = self.add(calls, "box", {"bbox": start_box, "label": "start"})
            thought.append(
                f"Start {self.curve.start} is on the left edge at about {_xy(_centre(box))}. I box it and follow "
                f"its line in {len(pieces)} pieces."
            )
        if wrong is None:
            thought.append(self.describe(piece, correct))
        else:
            thought.append(self.describe_wrong(points))
        region, factor = None, 1.0
        if self.spec.zoom:
            boxes = [self.scene.start_boxes[self.curve.start]] if p == 0 else []
            boxes += [self.scene.end_boxes[self.curve.end]] if last else []
            region, factor = self.zoom_region(np.vstack([correct, points]), boxes)
            thought.insert(-1, f"The lines are thin, so I zoom {factor:g}x into piece {p + 1} and trace it there.")
        if last:
            thought.append(f"It runs into the dot of end {self.curve.end}; I box that label.")
        self.draw(calls, p, points, region, factor, end=last)
        return ExpertTurn(" ".join(thought), tuple(calls))

    def fix_turn(self, p: int, pieces: list[_Piece], at: Crossing, wrong: np.ndarray, *, last: bool) -> ExpertTurn:
        """Notice the kink in piece ``p`` and redraw it under the same label along the right line."""
        label = f"trace{p + 1}"
        correct = self.points[pieces[p].lo : pieces[p].hi + 1]
        k = int(at.at)
        incoming = self.points[k] - self.points[max(0, k - 3)]
        onward = self.points[min(len(self.points) - 1, k + 4)] - self.points[k]
        bent = wrong[-1] - np.asarray(at.point)
        thought = (
            f"Checking {label}: at the crossing near {_xy(at.point)} it comes in heading {_heading(*incoming)} but "
            f"leaves heading {_heading(*bent)}, a sharp kink. The curvature does not match, so this piece jumped to a "
            f"different line at the crossing. The line from {self.curve.start} goes straight through there, heading "
            f"{_heading(*onward)}, to {_xy(correct[-1])}. I redraw {label} along it."
        )
        if last:
            thought += f" It runs into the dot of end {self.curve.end}; I box that label."
        calls: list[ToolCall] = []
        if self.spec.zoom:
            z = self.zoomed[p]
            # The same label on the same views replaces the wrong piece in the zoom and on the overview.
            fixed_zoom = {
                "view": z.view,
                "points": _path_points(z.to_zoom.apply_points(correct), z.size),
                "label": label,
            }
            self.add(calls, "path", fixed_zoom)
            if last:
                self.box_end(calls, z.to_zoom, z.size)
            mirror = {"view": self.overview, "points": _path_points(correct, self.full), "label": label}
            self.overview = self.add(calls, "path", mirror)
        else:
            self.draw(calls, p, correct, None, 1.0, end=last)
        return ExpertTurn(thought, tuple(calls))
