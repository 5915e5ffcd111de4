"""The scenes behind the golden rendering images; shared by the test and `make golden`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from sketchmind import Canvas

MAZE = Path(__file__).resolve().parents[2] / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"


def maze_route() -> np.ndarray:
    """A grid, a labelled route with an arrow, a start point and a goal box on a VSP maze."""
    canvas = Canvas(MAZE)
    canvas.apply("grid", {"rows": 4, "cols": 4})
    canvas.apply("path", {"points": [[32, 224], [96, 224], [96, 32]], "arrow": True, "label": "route"})
    canvas.apply("point", {"point": [32, 224], "label": "start"})
    canvas.apply("box", {"bbox": [64, 0, 128, 64], "label": "goal"})
    return canvas.latest.image


def whiteboard_marks() -> np.ndarray:
    """Every mark type on a blank whiteboard, with a label replaced and a note near the edge."""
    canvas = Canvas(None, whiteboard_size=(320, 240))
    canvas.apply("box", {"bbox": [20, 20, 120, 90], "label": "A"})
    canvas.apply("line", {"start": [20, 200], "end": [300, 120], "arrow": True, "label": "ray"})
    canvas.apply("box", {"bbox": [150, 30, 230, 100], "label": "A"})
    canvas.apply("text", {"point": [300, 230], "text": "edge note"})
    canvas.apply("grid", {"rows": 2, "cols": 3, "bbox": [20, 110, 140, 190], "numbered": False})
    return canvas.latest.image


def vilasr_style() -> np.ndarray:
    """ViLaSR's look: boxes coloured by position with plain labels, black lines with red/blue ends."""
    canvas = Canvas(MAZE, style="vilasr")
    canvas.apply_group(
        [
            ("box", {"view": 1, "bbox": [64, 0, 128, 64], "label": "goal"}),
            ("box", {"view": 1, "bbox": [0, 192, 64, 256], "label": "player"}),
            ("line", {"view": 1, "start": [32, 224], "end": [96, 224], "label": "step1"}),
        ]
    )
    return canvas.latest.image


def zoomed_crop() -> np.ndarray:
    """A crop of a drawn view, zoomed 3x with nearest resampling, with a box on the zoomed view."""
    canvas = Canvas(MAZE)
    canvas.apply("box", {"bbox": [64, 0, 128, 64], "label": "goal"})
    canvas.apply("crop", {"bbox": [40, 0, 140, 80]})
    canvas.apply("zoom", {"factor": 3, "resample": "nearest"})
    canvas.apply("box", {"bbox": [30, 30, 150, 150], "label": "zoomed"})
    return canvas.latest.image


SCENES: dict[str, Callable[[], np.ndarray]] = {
    "maze_route": maze_route,
    "whiteboard_marks": whiteboard_marks,
    "vilasr_style": vilasr_style,
    "zoomed_crop": zoomed_crop,
}
