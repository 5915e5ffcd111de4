"""Parser fuzzing: thousands of generated, then broken, model outputs for every protocol.

Valid turns are written from random valid tool calls in each protocol's format (and the slips each
parser accepts); clean turns must parse back to exactly those calls. Broken turns (truncated, edited,
tags dropped, blocks duplicated, control characters, deep nesting, huge numbers, NaN/Infinity...)
must never make a parser or the canvas raise, and never come back silently empty.

Deterministic (``derandomize=True``, no example database) so CI sees the same inputs every run.
``SKETCHMIND_FUZZ_SCALE`` (a float, default 1) multiplies every example count: ``tools/fuzz.py`` sets
it to run about 100,000 outputs; CI keeps the counts written here.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sketchmind import ActionError, Canvas, View
from sketchmind.protocols import (
    OpenAIToolsProtocol,
    ParsedTurn,
    Protocol,
    SearchProtocol,
    SketchMindProtocol,
    ToolCall,
    ToolResult,
    ViLaSRProtocol,
)
from sketchmind.protocols.sketchmind import format_call

SIZE = 1024  # Canvas(None) is a 1024 x 1024 whiteboard: every generated coordinate is valid on it


def fuzz_scale() -> float:
    """``SKETCHMIND_FUZZ_SCALE`` as a positive float (1 when unset)."""
    scale = float(os.environ.get("SKETCHMIND_FUZZ_SCALE", "") or 1)
    if not scale > 0:
        raise ValueError(f"SKETCHMIND_FUZZ_SCALE={scale}: must be a positive number")
    return scale


def fuzz_settings(n: int) -> settings:
    """Deterministic settings for ``n`` examples (times ``SKETCHMIND_FUZZ_SCALE``)."""
    return settings(
        max_examples=max(1, round(n * fuzz_scale())),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


# ---------------------------------------------------------------------------------------------------
# Valid tool calls
# ---------------------------------------------------------------------------------------------------

SAFE_CHARS = st.characters(categories=["Lu", "Ll", "Lo", "Nd"]) | st.sampled_from(" -_.,!?")
labels = st.text(SAFE_CHARS, min_size=1, max_size=16).filter(lambda s: s.strip() == s and s)
thoughts = st.text(SAFE_CHARS | st.just("\n"), max_size=80)
numbers = st.integers(0, SIZE) | st.floats(0, SIZE, allow_nan=False).map(lambda v: round(v, 2))


@st.composite
def bboxes(draw: st.DrawFn) -> list[float]:
    """A non-empty region [x1, y1, x2, y2] inside the canvas."""
    x1, x2 = sorted(draw(st.lists(st.integers(0, SIZE), min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(st.integers(0, SIZE), min_size=2, max_size=2, unique=True)))
    return [x1, y1, x2, y2]


@st.composite
def small_bboxes(draw: st.DrawFn) -> list[float]:
    """A region of at most 128 x 128 px, so that zooming it stays cheap."""
    x1, y1 = draw(st.integers(0, SIZE - 1)), draw(st.integers(0, SIZE - 1))
    return [x1, y1, min(SIZE, x1 + draw(st.integers(1, 128))), min(SIZE, y1 + draw(st.integers(1, 128)))]


points = st.lists(numbers, min_size=2, max_size=2)


@st.composite
def tool_calls(draw: st.DrawFn) -> ToolCall:
    """One valid drawing call, as a model would write it (optional keys sometimes left out)."""
    name = draw(st.sampled_from(["box", "line", "point", "path", "grid", "text", "crop", "zoom"]))
    args: dict[str, Any] = {}
    if name in ("box", "crop"):
        args["bbox"] = draw(bboxes())
    elif name == "line":
        args.update(start=draw(points), end=draw(points))
        if draw(st.booleans()):
            args["arrow"] = draw(st.booleans())
    elif name == "point":
        args["point"] = draw(points)
    elif name == "path":
        args["points"] = draw(st.lists(points, min_size=2, max_size=6))
    elif name == "grid":
        args.update(rows=draw(st.integers(1, 8)), cols=draw(st.integers(1, 8)))
        if draw(st.booleans()):
            args["bbox"] = draw(bboxes())
    elif name == "text":
        args.update(point=draw(points), text=draw(labels))
    elif name == "zoom":
        args.update(factor=draw(st.sampled_from([0.5, 1, 1.5, 2, 4])), bbox=draw(small_bboxes()))
        if draw(st.booleans()):
            args["resample"] = draw(st.sampled_from(["nearest", "bilinear", "bicubic", "area", "lanczos"]))
    if name not in ("crop", "zoom") and draw(st.booleans()):
        args["label"] = draw(labels)
    if draw(st.booleans()):
        args["view"] = 1
    return ToolCall(name, args)


# ---------------------------------------------------------------------------------------------------
# Valid turns, one strategy per protocol: (output, expected calls, expected answer)
# ---------------------------------------------------------------------------------------------------


def _sketchmind_call(call: ToolCall, style: str) -> str:
    payload: dict[str, Any]
    if style == "canonical":
        return format_call(call.name, call.arguments)
    if style == "openai":
        payload = {"type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
    elif style == "args":
        payload = {"name": call.name, "args": call.arguments}
    elif style == "flat":
        payload = {"name": call.name, **call.arguments}
    else:  # "fenced" or "unclosed": canonical JSON, wrapped differently below
        payload = {"name": call.name, "arguments": call.arguments}
    body = json.dumps(payload, indent=2 if style == "fenced" else None)
    if style == "fenced":
        return f"<tool_call>\n```json\n{body}\n```\n</tool_call>"
    if style == "unclosed":
        return f"<tool_call>{body}\n"
    return f"<tool_call>{body}</tool_call>"


@st.composite
def sketchmind_turns(draw: st.DrawFn) -> tuple[str, list[ToolCall], str | None, str]:
    thought = draw(thoughts).strip()
    head = f"<think>{thought}</think>\n"
    if draw(st.integers(0, 4)) == 0:
        answer = draw(labels)
        return f"{head}<answer>{answer}</answer>", [], answer, thought
    calls = draw(st.lists(tool_calls(), min_size=1, max_size=4))
    if draw(st.integers(0, 5)) == 0:  # several calls as one JSON list in one tag
        body = json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls])
        return f"{head}<tool_call>{body}</tool_call>", calls, None, thought
    styles = draw(st.lists(st.sampled_from(["canonical", "openai", "args", "flat", "fenced", "unclosed"]), min_size=1))
    text = head + "\n".join(_sketchmind_call(c, styles[i % len(styles)]) for i, c in enumerate(calls))
    return text, calls, None, thought


@st.composite
def vilasr_items(draw: st.DrawFn) -> tuple[dict[str, Any], ToolCall]:
    index = draw(st.integers(1, 3))
    label = draw(labels)
    if draw(st.booleans()):
        bbox = draw(bboxes())
        return {"index": index, "bbox_2d": bbox, "label": label}, ToolCall(
            "box", {"view": index, "label": label, "bbox": bbox}
        )
    start, end = draw(points), draw(points)
    item = {"index": index, "start_point_2d": start, "end_point_2d": end, "label": label}
    return item, ToolCall("line", {"view": index, "label": label, "start": start, "end": end})


def _vilasr_block(items: list[dict[str, Any]], style: str) -> str:
    if style == "json":
        return json.dumps(items)
    if style == "python":
        return repr(items)
    # As the prompt shows it: one key per line, with the "# Image index" comment the model copies.
    objects = []
    for item in items:
        keys = list(item)
        lines = [
            f'    "{k}": {json.dumps(item[k])}'
            + ("," if k != keys[-1] else "")
            + (" # Image index" if k == "index" else "")
            for k in keys
        ]
        objects.append("{\n" + "\n".join(lines) + "\n}")
    return "[" + ", ".join(objects) + "]"


@st.composite
def vilasr_turns(draw: st.DrawFn) -> tuple[str, list[ToolCall], str | None, str]:
    thought = draw(thoughts).strip()
    if draw(st.integers(0, 4)) == 0:
        answer = draw(labels)
        return f"<think> {thought} </think> Action: Answer\n<answer> {answer} </answer>", [], answer, thought
    drawn = draw(st.lists(vilasr_items(), min_size=1, max_size=5))
    items, calls = [i for i, _ in drawn], [c for _, c in drawn]
    split = draw(st.integers(1, len(items)))  # one or two ```json blocks
    chunks = [items[:split], items[split:]] if split < len(items) else [items]
    unclosed = draw(st.booleans())
    text = f"<think> {thought} </think>"
    for n, chunk in enumerate(chunks):
        tool = "Object Mapper" if "bbox_2d" in chunk[0] else "Path Tracer"
        body = _vilasr_block(chunk, draw(st.sampled_from(["json", "python", "pretty"])))
        last = n == len(chunks) - 1
        # ViLaSR's parser also accepts a last block left open up to </think>.
        fence = "\n</think>" if last and unclosed else "\n```"
        text += f" Action: {tool}\n```json\n{body}{fence}" + ("" if last else "\n")
    return text, calls, None, thought


@st.composite
def openai_messages(draw: st.DrawFn) -> tuple[dict[str, Any], list[ToolCall], str | None, str]:
    content = draw(st.none() | thoughts)
    thought = (content or "").strip()
    if draw(st.integers(0, 5)) == 0:  # a plain reply is the final answer
        reply = draw(labels)
        return {"role": "assistant", "content": reply, "tool_calls": draw(st.sampled_from([None, []]))}, [], reply, ""
    calls = [
        ToolCall(c.name, c.arguments, f"call_{i}_{draw(st.integers(0, 999))}")
        for i, c in enumerate(draw(st.lists(tool_calls(), min_size=1, max_size=4)))
    ]
    answer = draw(st.none() | labels)
    raw = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
        for c in calls
    ]
    if answer is not None:
        raw.append(
            {
                "id": "call_answer",
                "type": "function",
                "function": {"name": "answer", "arguments": json.dumps({"answer": answer})},
            }
        )
    return {"role": "assistant", "content": content, "tool_calls": raw}, calls, answer, thought


# ---------------------------------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------------------------------

TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "```json\n", "```", "Action: "]
SYNTAX = ["{", "}", "[", "]", '"', "'", ":", ",", "\n"]
NASTY_NUMBERS = [
    "1" * 400,
    "9" * 5000,  # over Python's int-string digit limit
    "1e999",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "inf",
    "0x1F",
    "1_000",
    "--1",
    "1.2.3",
    str(2**70),
    "-0",
    "true",
    "null",
]
SPECIAL_CHARS = ["\x00", "\x07", "\x1b", "\x7f", "\u202e", "\ufeff", "\u200b", "\ud800", "\U0001f600", "\r", "\t", "\\"]
nasty_text = st.text(st.characters(), max_size=6) | st.sampled_from(SPECIAL_CHARS + TAGS + SYNTAX + NASTY_NUMBERS)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@st.composite
def nested_garbage(draw: st.DrawFn) -> str:
    depth = draw(st.sampled_from([3, 50, 1500]))  # 1500: past json's recursion limit
    opener = draw(st.sampled_from(["[", "{", '{"a":', '{"name": "box", "arguments": ', "[{", "(("]))
    closed = draw(st.booleans())
    closer = {"[": "]", "{": "}", "[{": "}]", "((": "))"}.get(opener, "}")
    return opener * depth + draw(st.sampled_from(["1", "", "null", '"x"'])) + (closer * depth if closed else "")


@st.composite
def corrupted(draw: st.DrawFn, text: str) -> str:
    """``text`` after one to four random corruptions."""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                [
                    "truncate",
                    "delete",
                    "insert",
                    "replace",
                    "drop",
                    "duplicate",
                    "nest",
                    "number",
                    "number",
                    "tag",
                    "swapcase",
                ]
            )
        )
        n = len(text)
        i = draw(st.integers(0, n))
        if op == "truncate":
            text = text[:i]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 8)) :]
        elif op == "insert":
            text = text[:i] + draw(nasty_text) + text[i:]
        elif op == "replace":
            text = text[:i] + draw(nasty_text) + text[i + draw(st.integers(1, 4)) :]
        elif op == "drop":
            token = draw(st.sampled_from(TAGS + SYNTAX))
            at = [m.start() for m in re.finditer(re.escape(token), text)]
            if at:
                k = draw(st.sampled_from(at))
                text = text[:k] + text[k + len(token) :]
        elif op == "duplicate":
            j = draw(st.integers(i, n))
            text = text[:j] + text[i:j] * draw(st.integers(1, 3)) + text[j:]
        elif op == "nest":
            text = text[:i] + draw(nested_garbage()) + text[i:]
        elif op == "number":
            found = list(_NUMBER.finditer(text))
            if found:
                m = draw(st.sampled_from(found))
                text = text[: m.start()] + draw(st.sampled_from(NASTY_NUMBERS)) + text[m.end() :]
        elif op == "tag":
            text = text[:i] + draw(st.sampled_from(TAGS)) + text[i:]
        elif op == "swapcase":
            j = draw(st.integers(i, n))
            text = text[:i] + text[i:j].swapcase() + text[j:]
    return text


@st.composite
def corrupted_openai(draw: st.DrawFn) -> Any:
    """An assistant message whose content, arguments or structure has been broken."""
    message, _, _, _ = draw(openai_messages())
    message = json.loads(json.dumps(message))  # a deep copy
    if message.get("content") is not None and draw(st.booleans()):
        message["content"] = draw(corrupted(message["content"]))
    raw_calls = message.get("tool_calls") or []
    for k, raw in enumerate(raw_calls):
        what = draw(st.sampled_from(["arguments", "arguments", "name", "function", "replace", "keep"]))
        function = raw["function"]
        if what == "arguments":
            function["arguments"] = draw(
                corrupted(function["arguments"])
                | st.sampled_from(
                    [None, "", "null", "[]", "{}", 5, [1, 2], {"bbox": "1, 2, 3, 4"}, {"point": {"x": 1}}]
                )
            )
        elif what == "name":
            function["name"] = draw(
                st.sampled_from([None, "", "  ", 7, "BOX", " Line ", "unknown_tool", "answer", "ANSWER"]) | nasty_text
            )
        elif what == "function":
            raw["function"] = draw(st.sampled_from([None, "box", [], {}, {"arguments": "{}"}]))
        elif what == "replace":
            raw_calls[k] = draw(st.sampled_from([None, "box", [], {}, 3, {"name": "box", "bbox": [1, 2, 3, 4]}]))
    if draw(st.integers(0, 9)) == 0:
        return draw(corrupted(json.dumps(message)))  # the whole message as (broken) text
    return message


# ---------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------

SKETCHMIND, VILASR, OPENAI = SketchMindProtocol(), ViLaSRProtocol(), OpenAIToolsProtocol()
SEARCH = SearchProtocol()


def check_turn(protocol: Protocol, output: Any) -> ParsedTurn:
    """Everything that must hold for any output at all; returns the parsed turn."""
    turn = protocol.parse(output)
    assert isinstance(turn, ParsedTurn)
    assert turn.answer is not None or turn.calls or turn.errors, f"silently empty parse of {output!r}"
    assert isinstance(turn.thought, str)
    assert turn.answer is None or isinstance(turn.answer, str)
    assert all(isinstance(e, str) and e for e in turn.errors)
    canvas = Canvas(None)
    results = []
    for call in turn.calls:
        assert isinstance(call, ToolCall)
        assert isinstance(call.name, str) and call.name
        assert isinstance(call.arguments, dict)
        outcome = canvas.apply(call.name, call.arguments)
        assert isinstance(outcome, View | ActionError)
        results.append(ToolResult((call,), outcome))
    if isinstance(protocol, ViLaSRProtocol):
        groups = protocol.group(turn.calls)
        assert sorted(map(repr, (c for g in groups for c in g))) == sorted(map(repr, turn.calls))
        vilasr_canvas = Canvas(None, style="vilasr")
        results = []
        for group in groups:
            outcome = vilasr_canvas.apply_group([(c.name, c.arguments) for c in group])
            assert isinstance(outcome, View | ActionError)
            results.append(ToolResult(tuple(group), outcome))
    for final in (False, True):
        messages = protocol.observation(results, turn.errors, final=final)
        assert isinstance(messages, list)
        assert all(isinstance(m, dict) and m["role"] in ("user", "tool") for m in messages)
        if results or turn.errors:
            assert messages
    return turn


@fuzz_settings(300)
@given(sketchmind_turns())
def test_sketchmind_clean_turns_round_trip(case: tuple[str, list[ToolCall], str | None, str]) -> None:
    text, calls, answer, thought = case
    turn = check_turn(SKETCHMIND, text)
    assert turn.calls == calls
    assert turn.answer == answer and turn.errors == [] and turn.thought == thought
    canvas = Canvas(None)
    outcomes = [canvas.apply(c.name, {**c.arguments, "view": 1}) for c in calls]
    assert all(isinstance(v, View) for v in outcomes), outcomes


@fuzz_settings(300)
@given(vilasr_turns())
def test_vilasr_clean_turns_round_trip(case: tuple[str, list[ToolCall], str | None, str]) -> None:
    text, calls, answer, thought = case
    turn = check_turn(VILASR, text)
    assert turn.calls == calls
    assert turn.answer == answer and turn.errors == [] and turn.thought == thought
    # ViLaSR's grouping: one image per index, indices of boxes first, then those only paths name.
    order = [c.arguments["view"] for c in calls if c.name == "box"] + [c.arguments["view"] for c in calls]
    groups = VILASR.group(turn.calls)
    assert [g[0].arguments["view"] for g in groups] == list(dict.fromkeys(order))
    assert all(len({c.arguments["view"] for c in g}) == 1 for g in groups)
    canvas = Canvas(None, style="vilasr")
    for group in groups:
        exists = group[0].arguments["view"] <= len(canvas)
        outcome = canvas.apply_group([(c.name, c.arguments) for c in group])
        assert isinstance(outcome, View) == exists, outcome


@fuzz_settings(300)
@given(openai_messages())
def test_openai_clean_messages_round_trip(case: tuple[dict[str, Any], list[ToolCall], str | None, str]) -> None:
    message, calls, answer, thought = case
    turn = check_turn(OPENAI, message)
    assert turn.calls == calls
    assert turn.answer == answer and turn.errors == [] and turn.thought == thought
    canvas = Canvas(None)
    outcomes = [canvas.apply(c.name, {**c.arguments, "view": 1}) for c in calls]
    assert all(isinstance(v, View) for v in outcomes), outcomes


@fuzz_settings(800)
@given(sketchmind_turns().flatmap(lambda case: corrupted(case[0])))
@example("<tool_call>[")
@example("<tool_call>[]</tool_call>")
@example('<tool_call>{"name": "box", "arguments": {"bbox": [' + "9" * 5000 + ", 0, 1, 1]}}</tool_call>")
@example('<tool_call>{"name": "box", "arguments": {"bbox": [' + "1" * 400 + ", 0, 1, 1]}}</tool_call>")
@example('<tool_call>{"name": "box", "arguments": "' + "[" * 5000 + '"}</tool_call>')
def test_sketchmind_survives_corrupted_turns(text: str) -> None:
    check_turn(SKETCHMIND, text)


@fuzz_settings(700)
@given(vilasr_turns().flatmap(lambda case: corrupted(case[0])))
@example("```json\n[]\n```")
@example("```json\n[")
@example('```json\n[{"index": 1, "bbox_2d": [' + "9" * 5000 + ', 0, 1, 1], "label": "a"}]\n```')
@example('```json\n[{"index": 1, "bbox_2d": [NaN, Infinity, 1e999, -1e400], "label": "a"}]\n```')
def test_vilasr_survives_corrupted_turns(text: str) -> None:
    check_turn(VILASR, text)


@fuzz_settings(600)
@given(corrupted_openai())
def test_openai_survives_corrupted_messages(message: Any) -> None:
    check_turn(OPENAI, message)


@fuzz_settings(400)
@given(st.sampled_from([SKETCHMIND, VILASR, OPENAI, SEARCH]), st.text(st.characters(), max_size=300) | nested_garbage())
def test_every_protocol_survives_arbitrary_text(protocol: Protocol, text: str) -> None:
    check_turn(protocol, text)


@pytest.mark.parametrize(
    "arguments",
    [
        {"bbox": [10**400, 0, 1, 1]},
        {"bbox": [float("nan"), 0, 1, 1]},
        '{"bbox": [' + "9" * 5000 + ", 0, 1, 1]}",
        "[" * 100_000,
        '{"bbox": [1, 2, 3, 4], "view": ' + "1" * 400 + "}",
    ],
    ids=["huge int", "nan", "int over the digit limit", "deep nesting", "huge view"],
)
def test_canvas_apply_turns_hostile_arguments_into_errors(arguments: Any) -> None:
    outcome = Canvas(None).apply("box", arguments)
    assert isinstance(outcome, ActionError)
    assert "\n" not in str(outcome)
