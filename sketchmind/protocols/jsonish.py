"""Tolerant reading of the JSON that models write: fences, single quotes, trailing commas, cut-offs.

Built on json-repair; never evaluates anything. Returns objects or an error string, never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import json_repair

from sketchmind.protocols.base import ToolCall

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*|\s*```\s*$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NAME_KEYS = ("name", "tool", "tool_name", "function", "action", "type")
_ARG_KEYS = ("arguments", "args", "parameters", "params", "input", "kwargs")
MAX_DEPTH = 64
MAX_REPAIR_CHARS = 65_536  # json-repair is superlinear (1 MB took 27 s): longer text is read strictly or not at all


def loads(text: str) -> Any:
    """Parse JSON strictly if possible, else repair it. Returns ``None`` for non-JSON text."""
    text = _FENCE.sub("", text.strip())
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, too-deep nesting, ints over Python's digit limit
        pass
    if len(text) > MAX_REPAIR_CHARS:
        return None
    try:
        value = json_repair.loads(text)
        return None if value in ("", None) else _join_surrogates(value)
    except Exception:  # json-repair is a third-party parser on hostile input; contain any failure
        return None


def _join_surrogates(value: Any, depth: int = 0) -> Any:
    """Join escaped surrogate pairs ("\\ud83d\\ude00") into one character, as ``json.loads`` does.

    json-repair leaves them as two lone surrogates, which no string validator accepts. No tool call
    nests deeper than a few levels, so deeper values are refused rather than recursed into.
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if not _SURROGATE.search(value):
            return value
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
    if isinstance(value, list):
        return [_join_surrogates(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_join_surrogates(k, depth + 1): _join_surrogates(v, depth + 1) for k, v in value.items()}
    return value


def _arguments(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        value = loads(value) if value.strip() else {}
    return dict(value) if isinstance(value, Mapping) else None


def to_call(obj: Any, known: frozenset[str], call_id: str | None = None) -> ToolCall | str:
    """Normalise one decoded object into a ``ToolCall``, or say why it is not one.

    Accepts ``{"name", "arguments"}``, OpenAI's ``{"function": {"name", "arguments"}}``, common key
    aliases (``args``, ``parameters``, ``tool``...) and the flat ``{"name": "box", "bbox": ...}``.
    """
    if not isinstance(obj, Mapping):
        return f'a tool call must be a JSON object like {{"name": ..., "arguments": {{...}}}}, got {type(obj).__name__}'
    if isinstance(obj.get("function"), Mapping):
        return to_call(obj["function"], known, call_id or obj.get("id"))
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), None)
    if name is None:
        # {"box": {...}}: the tool name used as the only key.
        if len(obj) == 1:
            ((key, value),) = obj.items()
            if str(key).lower() in known and _arguments(value) is not None:
                return ToolCall(str(key).lower(), _arguments(value) or {}, call_id)
        return 'tool call has no "name"'
    arg_key = next((k for k in _ARG_KEYS if k in obj), None)
    if arg_key is None:
        used = {k for k in _NAME_KEYS if obj.get(k) == name} | {"id"}
        arguments: dict[str, Any] | None = {k: v for k, v in obj.items() if k not in used}
    else:
        arguments = _arguments(obj[arg_key])
    if arguments is None:
        return f"arguments of {name!r} must be a JSON object"
    return ToolCall(name.strip().lower(), arguments, call_id)


def calls_from_text(text: str, known: frozenset[str]) -> tuple[list[ToolCall], list[str]]:
    """Every tool call in one block of JSON text (an object, a list of them, or several in a row)."""
    value = loads(text)
    if value is None:
        snippet = " ".join(text.split())[:60]
        return [], [f"could not read a JSON tool call from {snippet!r}"]
    items = value if isinstance(value, list) else [value]
    if not items:
        return [], ['empty tool call list: write each call as {"name": ..., "arguments": {...}}']
    calls: list[ToolCall] = []
    errors: list[str] = []
    for item in items:
        result = to_call(item, known)
        if isinstance(result, ToolCall):
            calls.append(result)
        else:
            errors.append(result)
    return calls, errors
