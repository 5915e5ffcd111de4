"""Rendering: golden images within a tolerance, stable colours, scaling strokes, readable labels, ViLaSR's look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from golden.scenes import SCENES
from PIL import Image

from sketchmind import Canvas, View
from sketchmind.render import PALETTE, color_for, ink_on
from sketchmind.render_vilasr import PALETTE as VILASR_PALETTE

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(SCENES))
def test_rendering_matches_golden_image(name: str) -> None:
    """Anti-aliasing may shift by a level between OpenCV builds; geometry and colours may not."""
    expected = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB")).astype(np.int16)
    actual = SCENES[name]().astype(np.int16)
    assert actual.shape == expected.shape
    difference = np.abs(actual - expected).max(axis=2)
    assert difference.mean() < 1.0, f"{name}: mean difference {difference.mean():.2f} (run `make golden` if intended)"
    assert (difference > 48).mean() < 0.002, f"{name}: {(difference > 48).mean():.2%} of pixels changed a lot"


def test_colours_are_stable_per_label() -> None:
    assert color_for("goal") == color_for("goal")
    assert color_for("goal") in PALETTE
    labels = [f"object {i}" for i in range(40)]
    assert len({color_for(label) for label in labels}) >= len(PALETTE) - 2  # labels spread over the palette
    # Same label, same colour, whatever view or position it is drawn in.
    canvas = Canvas(None, whiteboard_size=(200, 200))
    canvas.apply("point", {"point": [20, 20]})
    first = canvas.apply("box", {"bbox": [50, 50, 150, 150], "label": "goal"})
    second = canvas.apply("box", {"view": 1, "bbox": [50, 50, 150, 150], "label": "goal"})
    assert isinstance(first, View) and isinstance(second, View)
    assert tuple(first.image[100, 50]) == tuple(second.image[100, 50]) == color_for("goal")


def _stroke_width(image: np.ndarray, row: int) -> int:
    """Strongly coloured pixels across a vertical stroke along one row (on white)."""
    return int((image[row, :, :].min(axis=1) < 128).sum())


@pytest.mark.parametrize(("size", "expected"), [(256, 2), (1024, 5), (4096, 20)])
def test_stroke_width_scales_with_image_size(size: int, expected: int) -> None:
    canvas = Canvas(None, whiteboard_size=(size, size))
    view = canvas.apply("line", {"start": [size / 2, 0], "end": [size / 2, size]})
    assert isinstance(view, View)
    width = _stroke_width(view.image, size // 3)
    assert expected - 1 <= width <= expected + 3


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    def luminance(c: tuple[int, int, int]) -> float:
        channels = [v / 255 for v in c]
        linear = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("color", PALETTE)
def test_label_text_is_readable_on_its_tag(color: tuple[int, int, int]) -> None:
    """Tags are opaque, so the text/tag contrast is all that matters: WCAG large-text level (3:1) or better."""
    assert _contrast(ink_on(color), color) >= 3.0


def test_label_tags_stay_inside_the_image() -> None:
    canvas = Canvas(None, whiteboard_size=(200, 100))
    view = canvas.apply("box", {"bbox": [150, 0, 200, 30], "label": "a long label at the edge"})
    assert isinstance(view, View)
    drawn = (view.image != 255).any(axis=2)
    assert drawn[:20, :140].any(), "a long tag is shifted left of its box to stay fully visible"
    assert drawn[:20, 199].any(), "and still reaches the right edge without being cut"


def test_vilasr_style_pixels() -> None:
    """ViLaSR: 4 px boxes coloured by position (red, green, ...), black 4 px lines, red start and blue end dots."""
    canvas = Canvas(None, whiteboard_size=(400, 300), style="vilasr")
    view = canvas.apply_group(
        [
            ("box", {"bbox": [100, 100, 200, 200], "label": "first"}),
            ("box", {"bbox": [250, 50, 350, 150], "label": "second"}),
            ("line", {"start": [20, 250], "end": [380, 250], "label": "path"}),
        ]
    )
    assert isinstance(view, View)
    image = view.image
    assert VILASR_PALETTE[:2] == ((255, 0, 0), (0, 128, 0))
    assert tuple(image[150, 101]) == (255, 0, 0)  # first box: red
    assert tuple(image[100, 251]) == (0, 128, 0)  # second box: green
    red = np.where((image == (255, 0, 0)).all(axis=2, keepdims=True), 0, 255).astype(np.uint8).repeat(3, axis=2)
    assert _stroke_width(red[:, :150], 150) == 4  # the box's left edge is exactly 4 px
    assert tuple(image[250, 200]) == (0, 0, 0)  # black line
    column = image[:, 200].max(axis=1) < 128
    assert column.sum() == 4  # PIL, not anti-aliased: exactly 4 px
    start, end = image[250, 20], image[250, 380]
    assert start[0] > 200 and start[2] < 60, "red dot at the start"
    assert end[2] > 200 and end[0] < 60, "blue dot at the end"


def test_vilasr_redraw_keeps_the_old_pixels_like_vilasr() -> None:
    """ViLaSR merges labels in its list but draws over the referenced image, so the old box stays visible."""
    for style, old_box_visible in (("vilasr", True), ("sketchmind", False)):
        canvas = Canvas(None, whiteboard_size=(300, 200), style=style)
        canvas.apply("box", {"bbox": [10, 10, 60, 60], "label": "A"})
        moved = canvas.apply("box", {"view": 2, "bbox": [200, 100, 260, 160], "label": "A"})
        assert isinstance(moved, View) and len(moved.marks) == 1
        assert (moved.image[10:60, 11] != 255).any() == old_box_visible, style


def test_vilasr_box_corners_follow_vilasr_float_arithmetic() -> None:
    """ViLaSR computes int(x / W * W): at W=476, x=61 lands on column 60."""
    canvas = Canvas(None, whiteboard_size=(476, 300), style="vilasr")
    view = canvas.apply("box", {"bbox": [61, 50, 200, 150]})
    assert isinstance(view, View)
    assert tuple(view.image[100, 60]) == (255, 0, 0) and tuple(view.image[100, 59]) == (255, 255, 255)
