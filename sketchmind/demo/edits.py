"""The calls waiting at a step-by-step pause, as JSON a person edits, and the marks a person adds.

The agent keeps pending calls as groups (a group draws as one view). The editor shows one call per
entry when a group holds one call, and a list for a group of several, so the common case reads as a
plain list of ``{"name", "arguments"}`` objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from sketchmind.actions import ActionError, ViewAction, parse_action
from sketchmind.canvas import Canvas
from sketchmind.demo.limits import DemoInputError

MarkKind = Literal["box", "line"]
MARK_KINDS: tuple[MarkKind, ...] = ("box", "line")
Group = list[dict[str, Any]]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def pending_to_json(pending: Sequence[Sequence[dict[str, Any]]]) -> str:
    """The editor text for pending groups: ``[call, [call, call], ...]`` with only name and arguments,
    one entry per line."""
    entries: list[Any] = []
    for group in pending:
        calls = [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in group]
        entries.append(calls[0] if len(calls) == 1 else calls)
    if not entries:
        return "[]"
    return "[\n" + ",\n".join(f"  {json.dumps(entry)}" for entry in entries) + "\n]"


def json_to_pending(text: str, original: Sequence[Sequence[dict[str, Any]]]) -> list[Group]:
    """Groups from the editor text; ``DemoInputError`` (one line) for bad JSON or an invalid call.

    A call keeps the id of the call in the same place before the edit (function-calling protocols
    pair results with ids); calls a person added have none.
    """
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError as error:
        raise DemoInputError(f"The pending calls are not valid JSON (line {error.lineno}: {error.msg}).") from None
    if not isinstance(value, list):
        raise DemoInputError('The pending calls must be a JSON list of {"name": ..., "arguments": {...}} objects.')
    groups: list[Group] = []
    for g, entry in enumerate(value):
        calls = entry if isinstance(entry, list) else [entry]
        if not calls:
            raise DemoInputError(f"Entry {g + 1} of the pending calls is an empty group.")
        group: Group = []
        for j, call in enumerate(calls):
            where = f"entry {g + 1}" + (f", call {j + 1}" if len(calls) > 1 else "")
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise DemoInputError(f'Pending calls, {where}: expected {{"name": ..., "arguments": {{...}}}}.')
            arguments = call.get("arguments") or {}
            try:
                parse_action(call["name"], arguments)
            except ActionError as error:
                raise DemoInputError(f"Pending calls, {where}: {error}") from None
            before = original[g][j] if g < len(original) and j < len(original[g]) else {}
            group.append({"name": call["name"], "arguments": arguments, "id": before.get("id"), "group": g})
        groups.append(group)
    return groups


def make_mark(kind: str, coordinates: str, label: str | None) -> dict[str, Any]:
    """A person's box (``x1, y1, x2, y2``) or line (``x1, y1 -> x2, y2``) as a call; ``DemoInputError`` if malformed."""
    if kind not in MARK_KINDS:
        raise DemoInputError(f"Pick a mark kind: {' or '.join(MARK_KINDS)}.")
    numbers = [float(n) for n in _NUMBER.findall(coordinates or "")]
    if len(numbers) != 4:
        shape = "x1, y1, x2, y2 (two corners)" if kind == "box" else "x1, y1, x2, y2 (start and end)"
        raise DemoInputError(f"Type the {kind} as 4 numbers: {shape}; got {len(numbers)}.")
    values = [round(n) if n.is_integer() else n for n in numbers]
    arguments: dict[str, Any] = (
        {"bbox": values} if kind == "box" else {"start": values[:2], "end": values[2:], "arrow": False}
    )
    if label and label.strip():
        arguments["label"] = label.strip()
    try:
        parse_action(kind, arguments)
    except ActionError as error:
        raise DemoInputError(f"Your {kind}: {error}") from None
    return {"name": kind, "arguments": arguments}


def check_on_latest(call: dict[str, Any], canvas: Canvas, pending: Sequence[Sequence[dict[str, Any]]]) -> None:
    """Check a person's mark lies inside the view it will draw on (the latest view, unless it names one).

    Skipped when a pending crop or zoom will make a new latest view of another size first.
    """
    if any(c["name"] in ("crop", "zoom") for group in pending for c in group):
        return
    action = parse_action(call["name"], call["arguments"])
    if not isinstance(action, ViewAction):
        return
    try:
        view = canvas[action.view] if action.view is not None else canvas.latest
        action.check(view.index, view.width, view.height, canvas.convention)
    except ActionError as error:
        raise DemoInputError(f"Your mark: {error}") from None


def coordinate_hint(canvas: Canvas) -> str:
    """How coordinates are written on this canvas, e.g. ``pixels of the view (0-312 × 0-312)``."""
    view = canvas.latest
    if canvas.convention.value == "pixels":
        return f"pixels of the view you draw on (the latest, view {view.index}, is {view.width}×{view.height})"
    high = "1000" if canvas.convention.value == "norm1000" else "1"
    return f"0-{high} on both axes of the view you draw on (the latest is view {view.index})"
