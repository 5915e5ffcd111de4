"""Coordinate conventions and crop/zoom chains map back exactly (property-based)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchmind import Affine, Canvas, Convention

sizes = st.integers(min_value=1, max_value=4096)
finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@given(st.sampled_from(list(Convention)), sizes, sizes, st.floats(0, 1), st.floats(0, 1))
def test_convention_round_trip(convention: Convention, width: int, height: int, u: float, v: float) -> None:
    x, y = u * width, v * height
    cx, cy = convention.from_pixels(x, y, width, height)
    max_x, max_y = convention.extent(width, height)
    assert 0 <= cx <= max_x + 1e-9 and 0 <= cy <= max_y + 1e-9
    bx, by = convention.to_pixels(cx, cy, width, height)
    assert abs(bx - x) < 1e-6 and abs(by - y) < 1e-6


def test_convention_values() -> None:
    assert Convention.NORM1000.to_pixels(500, 250, 640, 480) == (320, 120)
    assert Convention.UNIT.to_pixels(0.5, 1.0, 640, 480) == (320, 480)
    assert Convention.parse("0-1000") is Convention.NORM1000
    with pytest.raises(ValueError, match="unknown coordinate convention"):
        Convention.parse("inches")


affines = st.builds(
    lambda sx, sy, tx, ty: Affine.scale(sx, sy).then(Affine.translate(tx, ty)),
    st.floats(0.05, 20),
    st.floats(0.05, 20),
    finite,
    finite,
)


@given(st.lists(affines, min_size=1, max_size=6), finite, finite)
def test_affine_chain_inverts(chain: list[Affine], x: float, y: float) -> None:
    total = Affine()
    for step in chain:
        total = total.then(step)
    back = total.inverse()(*total(x, y))
    assert back == pytest.approx((x, y), abs=1e-6 * max(1.0, abs(x), abs(y)))
    points = np.array([[x, y], [0.0, 0.0]])
    assert np.allclose(total.apply_points(points)[0], total(x, y))


@st.composite
def chains(draw: st.DrawFn) -> tuple[int, int, int, int, list[tuple[str, dict[str, object]]]]:
    """A source image size, one probe pixel inside it, and crop/zoom steps that keep the probe in view."""
    width, height = draw(st.integers(8, 120)), draw(st.integers(8, 120))
    px, py = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    return width, height, px, py, draw(st.lists(st.sampled_from(["crop", "zoom", "zoom_region"]), max_size=4))


def _region_around(draw_floats: st.DrawFn, cx: float, cy: float, w: int, h: int) -> list[float]:
    x1 = draw_floats(st.floats(0, cx - 0.5)) if cx > 0.5 else 0.0
    y1 = draw_floats(st.floats(0, cy - 0.5)) if cy > 0.5 else 0.0
    x2 = draw_floats(st.floats(cx + 0.5, w)) if cx + 0.5 < w else float(w)
    y2 = draw_floats(st.floats(cy + 0.5, h)) if cy + 0.5 < h else float(h)
    return [x1, y1, x2, y2]


@settings(max_examples=300, deadline=None)
@given(chains(), st.data())
def test_crop_zoom_chain_maps_back_within_half_a_pixel(chain: tuple, data: st.DataObject) -> None:
    """A single bright source pixel, followed through crops and zooms, maps back to where it was."""
    width, height, px, py, steps = chain
    image = np.zeros((height, width, 3), np.uint8)
    image[py, px] = (255, 255, 255)
    canvas = Canvas(image)
    for step in steps:
        view = canvas.latest
        cx, cy = view.from_source(px + 0.5, py + 0.5)  # the probe's centre in the current view
        if step == "crop":
            arguments: dict[str, object] = {"bbox": _region_around(data.draw, cx, cy, view.width, view.height)}
        else:
            factor = data.draw(st.sampled_from([1, 1.5, 2, 2.5, 3, 4]))
            arguments = {"factor": factor, "resample": "nearest"}
            if step == "zoom_region":
                arguments["bbox"] = _region_around(data.draw, cx, cy, view.width, view.height)
            if view.width * view.height * factor * factor > 2_000_000:
                continue
        outcome = canvas.apply("crop" if step == "crop" else "zoom", arguments)
        assert not isinstance(outcome, Exception), outcome
    final = canvas.latest
    rows, cols = np.nonzero(final.image[:, :, 0] > 127)
    assert len(rows) > 0, "the probe pixel must stay in view"
    centre = (cols.mean() + 0.5, rows.mean() + 0.5)
    sx, sy = final.to_source(*centre)
    assert abs(sx - (px + 0.5)) <= 0.5 and abs(sy - (py + 0.5)) <= 0.5
    # And forwards: the probe's source centre lands on the bright block, up to the sampling of
    # nearest-neighbour resizes at fractional factors (at most one source pixel).
    fx, fy = final.from_source(px + 0.5, py + 0.5)
    view_per_source = 1 / final.to_source.a
    nearest = np.hypot(cols + 0.5 - fx, rows + 0.5 - fy).min()
    assert nearest <= max(0.5, view_per_source)


def test_mark_on_zoomed_crop_maps_to_source_pixels() -> None:
    canvas = Canvas(np.zeros((100, 200, 3), np.uint8))
    canvas.apply("crop", {"bbox": [50, 20, 150, 80]})
    canvas.apply("zoom", {"factor": 4})
    zoomed = canvas.latest
    assert zoomed.size == (400, 240)
    assert zoomed.to_source(0, 0) == (50, 20)
    assert zoomed.to_source(400, 240) == (150, 80)
    assert zoomed.to_source(40, 40) == (60, 30)


def test_norm1000_actions_convert_to_view_pixels() -> None:
    canvas = Canvas(np.zeros((200, 400, 3), np.uint8), coords="norm1000")
    view = canvas.apply("crop", {"bbox": [250, 500, 750, 1000]})
    assert not isinstance(view, Exception)
    assert view.size == (200, 100)
    assert view.to_source(0, 0) == (100, 100)
