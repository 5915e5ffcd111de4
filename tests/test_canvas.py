"""Canvas semantics: immutable numbered views, reuse by index, label merging, precise errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sketchmind import ActionError, Canvas, View


def test_views_are_numbered_from_one_and_never_mutated(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    source = canvas[1]
    before = source.image.copy()
    view = canvas.apply("box", {"bbox": [10, 10, 200, 200], "label": "A"})
    assert isinstance(view, View)
    assert view.index == 2 and view.parent == 1 and len(canvas) == 2
    assert np.array_equal(source.image, before)
    assert not np.array_equal(view.image, before)
    with pytest.raises(ValueError):
        view.image[0, 0] = 0  # views are read-only


def test_any_earlier_view_can_be_reused(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    canvas.apply("box", {"bbox": [10, 10, 100, 100], "label": "A"})
    canvas.apply("box", {"bbox": [300, 300, 400, 400], "label": "B"})
    branch = canvas.apply("point", {"view": 1, "point": [500, 50]})
    assert isinstance(branch, View) and branch.parent == 1
    # The branch starts from the clean input, so mark A is not on it.
    assert np.array_equal(branch.image[10:100, 10], image_640x480[10:100, 10])
    assert len(branch.marks) == 1


def test_whiteboard_without_an_image() -> None:
    canvas = Canvas(None, whiteboard_size=(300, 200))
    assert canvas.source.size == (300, 200)
    assert (canvas.source.image == 255).all()
    view = canvas.apply("line", {"start": [10, 10], "end": [290, 190], "arrow": True})
    assert isinstance(view, View) and (view.image < 255).any()


def test_same_label_replaces_the_old_mark(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    canvas.apply("box", {"bbox": [10, 10, 100, 100], "label": "A"})
    moved = canvas.apply("box", {"bbox": [300, 300, 400, 400], "label": "A"})
    assert isinstance(moved, View)
    assert len(moved.marks) == 1
    assert np.array_equal(moved.image[5:110, 5:110], image_640x480[5:110, 5:110]), "old mark must be gone"
    assert not np.array_equal(moved.image[300:400, 300], image_640x480[300:400, 300])
    # Unlabelled marks accumulate.
    canvas.apply("point", {"point": [50, 50]})
    canvas.apply("point", {"point": [60, 60]})
    assert len(canvas.latest.marks) == 3


def test_drawn_views_share_the_clean_raster(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    for i in range(5):
        canvas.apply("box", {"bbox": [i, i, 100 + i, 100 + i], "label": f"m{i}"})
    assert all(v.base is canvas.source.image for v in canvas.views[1:])


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("box", {"view": 1, "bbox": [10, 10, 900, 100]}, "box bbox: x=900 is outside view 1 (640x480)"),
        ("point", {"point": [-1, 5]}, "point point: x=-1 is outside view 1 (640x480)"),
        ("line", {"start": [0, 0], "end": [10, 481]}, "line end: y=481 is outside view 1 (640x480)"),
        ("box", {"view": 7, "bbox": [1, 2, 3, 4]}, "view 7 does not exist; views are numbered 1 to 1"),
        ("circle", {}, "unknown tool 'circle'"),
        ("line", {"start": [1, 2]}, "line: missing argument 'end'"),
        ("box", {"bbox": [1, 2, 3, 4], "colour": "red"}, "unexpected argument 'colour'"),
        ("box", "{not json", "box: arguments are not valid JSON"),
        ("box", {"bbox": [1, 2, 3]}, "box: bbox:"),
        ("box", {"bbox": [1, 2, float("nan"), 4]}, "box: bbox.2:"),
        ("crop", {"bbox": [10, 10, 10, 50]}, "is empty"),
        ("zoom", {"factor": 16}, "over the 16 Mpx view limit"),
        ("zoom", {"factor": 2, "resample": "fancy"}, "resample"),
        ("answer", {"answer": "42"}, "answer does not draw"),
    ],
)
def test_invalid_actions_become_one_line_errors(
    image_640x480: np.ndarray, name: str, arguments: object, message: str
) -> None:
    canvas = Canvas(image_640x480)
    outcome = canvas.apply(name, arguments)  # type: ignore[arg-type]
    assert isinstance(outcome, ActionError)
    assert message in str(outcome)
    assert "\n" not in str(outcome)
    assert len(canvas) == 1, "a failed action must not add a view (and never clamps)"


def test_errors_speak_the_models_convention() -> None:
    canvas = Canvas(np.zeros((480, 640, 3), np.uint8), coords="norm1000")
    outcome = canvas.apply("box", {"bbox": [0, 0, 1200, 10]})
    assert str(outcome) == "box bbox: x=1200 is outside view 1 (0-1000 coordinates)"


def test_common_argument_slips_are_accepted(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    view = canvas.apply("box", '{"bbox": "[100, 50, 10, 5]"}')  # a JSON string, reversed corners, a string list
    assert isinstance(view, View)
    assert view.marks[0].bbox == [10, 5, 100, 50]  # type: ignore[attr-defined]
    view = canvas.apply("Point", {"point": {"x": 3, "y": 4}})
    assert isinstance(view, View) and view.marks[-1].point == [3, 4]  # type: ignore[attr-defined]


def test_crop_and_zoom_make_new_rasters(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    crop = canvas.apply("crop", {"bbox": [100.4, 50, 300, 250.2]})
    assert isinstance(crop, View)
    assert crop.size == (200, 201)  # bounds widen to whole pixels, never shrink
    assert np.array_equal(crop.image, image_640x480[50:251, 100:300])
    zoom = canvas.apply("zoom", {"factor": 2, "resample": "nearest"})
    assert isinstance(zoom, View) and zoom.size == (400, 402)
    assert np.array_equal(zoom.image[::2, ::2], crop.image)


def test_group_draws_one_view_atomically(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    view = canvas.apply_group(
        [("box", {"bbox": [1, 1, 50, 50], "label": "a"}), ("line", {"start": [0, 0], "end": [9, 9]})]
    )
    assert isinstance(view, View) and len(view.marks) == 2 and len(canvas) == 2
    failed = canvas.apply_group([("box", {"bbox": [1, 1, 50, 50]}), ("box", {"bbox": [1, 1, 5000, 50]})])
    assert isinstance(failed, ActionError) and len(canvas) == 2
    mixed = canvas.apply_group([("box", {"view": 1, "bbox": [1, 1, 5, 5]}), ("box", {"view": 2, "bbox": [1, 1, 5, 5]})])
    assert isinstance(mixed, ActionError) and "one view" in str(mixed)


def test_provenance_is_json(image_640x480: np.ndarray) -> None:
    canvas = Canvas(image_640x480)
    canvas.apply("crop", {"bbox": [10, 20, 110, 120]})
    canvas.apply("box", {"bbox": [1, 1, 50, 50], "label": "x"})
    records = json.loads(json.dumps(canvas.provenance()))
    assert [r["index"] for r in records] == [1, 2, 3]
    assert records[1]["to_source"] == [1, 0, 10, 0, 1, 20]
    assert records[2]["actions"] == [{"name": "box", "arguments": {"label": "x", "bbox": [1, 1, 50, 50]}}]
    assert canvas.latest.describe() == "view 3: box 'x' on view 2 (100x100)"


def test_canvas_does_not_alias_the_callers_array() -> None:
    pixels = np.zeros((10, 10, 3), np.uint8)
    canvas = Canvas(pixels)
    pixels[0, 0] = 255  # the caller's array stays writable and view 1 stays as it was
    assert canvas.source.image[0, 0, 0] == 0


def test_a_later_stroke_never_hides_an_earlier_label() -> None:
    canvas = Canvas(np.full((256, 256, 3), 255, np.uint8))
    labelled = canvas.apply("box", {"bbox": [40, 100, 120, 180], "label": "player"})
    crossed = canvas.apply("line", {"start": [0, 90], "end": [255, 90]})  # straight through the tag
    assert isinstance(labelled, View) and isinstance(crossed, View)
    tag = (labelled.image[:96] != 255).any(axis=2)  # the tag is the only ink well above the box
    rows, cols = np.flatnonzero(tag.any(axis=1)), np.flatnonzero(tag.any(axis=0))
    region = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    assert rows.min() < 90 < rows.max()  # the line really crosses it
    assert np.array_equal(crossed.image[region], labelled.image[region])
    # ... and the incremental view equals a full re-render of the same marks
    again = Canvas(np.full((256, 256, 3), 255, np.uint8))
    again.apply_group(
        [("box", {"bbox": [40, 100, 120, 180], "label": "player"}), ("line", {"start": [0, 90], "end": [255, 90]})]
    )
    assert np.array_equal(again.latest.image, crossed.image)
