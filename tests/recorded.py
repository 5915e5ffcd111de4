"""Shared test data: the VSP maze used across tests and an expert trajectory for it."""

from __future__ import annotations

from pathlib import Path

MAZE = Path(__file__).resolve().parents[1] / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"

# Three sketchmind-protocol turns: grid + goal box, a route, the answer (Action plan: R,U,U,U).
EXPERT = [
    '<think>Grid first.</think><tool_call>{"name": "grid", "arguments": {"rows": 4, "cols": 4}}</tool_call>'
    '<tool_call>{"name": "box", "arguments": {"view": 1, "bbox": [64, 0, 128, 64], "label": "goal"}}</tool_call>',
    '<think>Route up column 2.</think><tool_call>{"name": "path", "arguments": {"view": 2, '
    '"points": [[32, 224], [96, 224], [96, 32]], "label": "route"}}</tool_call>',
    "<think>The route avoids the hole.</think><answer>Action plan: R,U,U,U</answer>",
]
