"""Drive the drawing tools from plain Python, the way your own agent would.

    python examples/draw_tools.py [OUT_DIR]

Loads a VSP maze, asks for the JSON-schema tool specs you would hand to a model, executes a few tool
calls (one of them deliberately wrong, to show the error text a model gets back) and saves every view.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sketchmind import Canvas, View
from sketchmind.tools import specs

MAZE = Path(__file__).resolve().parents[1] / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"


def main(out_dir: Path) -> None:
    print("tools for the model:", ", ".join(spec["function"]["name"] for spec in specs()))
    canvas = Canvas(MAZE)  # view 1; coordinates are pixels of the view you draw on
    calls = [
        ("grid", {"rows": 4, "cols": 4}),
        ("box", {"view": 2, "bbox": [64, 0, 128, 64], "label": "goal"}),
        ("path", {"points": [[32, 224], [96, 224], [96, 32]], "arrow": True, "label": "route"}),
        ("box", {"bbox": [64, 0, 300, 64], "label": "oops"}),  # off the image: an error for the model
        ("zoom", {"view": 4, "bbox": [64, 0, 128, 64], "factor": 4, "resample": "nearest"}),
    ]
    for name, arguments in calls:
        outcome = canvas.apply(name, arguments)
        print(outcome.describe() if isinstance(outcome, View) else f"error for the model: {outcome}")
    zoomed = canvas.latest
    print("zoomed view's top-left corner is source pixel", zoomed.to_source(0, 0))
    out_dir.mkdir(parents=True, exist_ok=True)
    for view in canvas.views:
        view.pil().save(out_dir / f"view{view.index}.png")
    print(f"saved {len(canvas)} views to {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/draw_tools"))
