# ruff: noqa: E501  (ViLaSR's prompt and model outputs are verbatim text; their long lines are part of it)
"""Protocols: prompts, tolerant parsing, grouping and observations for sketchmind, vilasr and openai-tools.

The ViLaSR strings below are typed out from ViLaSR's ``eval/infer.py`` (AntResearchNLP/ViLaSR) rather
than imported from ``sketchmind.protocols.vilasr``, so drift in the module's copy fails here.
``vilasr_parse`` / ``vilasr_groups`` repeat ViLaSR's own parser (``eval/utils/edit_image.py``) and
its per-index grouping (``process_single_response``) as the reference the protocol must agree with.
"""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from sketchmind import ActionError, Canvas, View
from sketchmind.protocols import (
    PROTOCOLS,
    OpenAIToolsProtocol,
    ParsedTurn,
    SketchMindProtocol,
    ToolCall,
    ToolResult,
    ViLaSRProtocol,
    get_protocol,
)
from sketchmind.tools import specs

RED, GREEN, BLUE, BLACK, WHITE = (255, 0, 0), (0, 128, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255)

# ---------------------------------------------------------------------------------------------------
# ViLaSR reference (verbatim text and logic from AntResearchNLP/ViLaSR)
# ---------------------------------------------------------------------------------------------------

VILASR_SYSTEM_PROMPT_476 = """### Guidance:
You are a spatial reasoning assistant with access to two powerful visualization tools.
Your task is to break down complex spatial problems and iteratively refine your solution through visualization feedback.

### Available tools:
You can use the following two tools to visualize. After each tool usage, you must wait for and analyze the visualization feedback before proceeding.

1. **Object Mapper**
- Purpose: Identifies and maps key items in the space
- Input format: JSON
```json
[{
    "index": i, # Image index
    "bbox_2d": [x1, y1, x2, y2],
    "label": "object name/description"
}]
```
- Output: Generates bounding boxes for visual inspection of the i-th image

2. **Path Tracer**
- Purpose: Plots movement or connections between points
- Input format: JSON
```json
[{
    "index": i, # Image index
    "start_point_2d": [x1, y1],
    "end_point_2d": [x2, y2],
    "label": "trace_description"
}]
```
- Output: Generates visual paths for verification of the i-th image

### Required Output Format:
For each reasoning step, you must structure your response as follows:
<think> [Your detailed reasoning process] </think> Action: [Object Mapper/Path Tracer]
```json
[JSON format coordinates]
```

After your reasoning and iteratively refine your solution through visualization feedback, you should arrive at a final answer and structure your response as follows:
<think> [Your detailed reasoning process] </think> Action: Answer
<answer> [Your final answer] </answer>

### Please NOTE the following reasoning techniques:
1. Initial Analysis
   - Break down the spatial problem
   - Plan your approach

2. Iterative Reasoning for Each Step
   - Choose appropriate tool
   - Provide absolute coordinates in JSON format (The top-left corner of the image is (0, 0) and the bottom-right corner is (476, 476))
   - Observe the visualization output
   - Reflect on the visualization:
     * Is the placement/path accurate?
     * Does it align with your reasoning?
     * What adjustments are needed?
   - Backtrack and Adjust:
     * If errors found, backtrack to previous step to modify actions or decisions as needed"""

VILASR_INTERMEDIATE = (
    "The index of the given image is {n} (width: {w}, height: {h}). Continue your reasoning. "
    "After each tool use, critically evaluate the visualization and adjust if needed:"
)
VILASR_FINAL = (
    "The index of the given image is {n} (width: {w}, height: {h}). Then, you can not invoke the Object Mapper "
    "or Path Tracer tool. Please answer the initial question and structure your response as required:"
)


def _safe_eval(item: str) -> Any:
    try:
        return ast.literal_eval(item)
    except (ValueError, SyntaxError):
        return None


def _parse_json(json_output: str) -> list[str]:
    json_output_list = []
    lines = json_output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "```json":
            tmp = "\n".join(lines[i + 1 :])
            tmp = tmp.split("```")[0] if "```" in tmp else tmp.split("</think>")[0].strip()
            json_output_list.append(tmp)
    return json_output_list


def vilasr_parse(response: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """ViLaSR's ``parse_bbox_and_movement``: (boxes, movements) it would draw."""
    parsed_list = [_safe_eval(item) for item in _parse_json(response)]
    bbox_list, movement_list = [], []
    for item_list in (item for item in parsed_list if item is not None):
        for item in item_list:
            if "bbox_2d" in item and "label" in item:
                bbox_list.append(item)
            elif "start_point_2d" in item and "end_point_2d" in item and "label" in item:
                movement_list.append(item)
    return bbox_list, movement_list


def vilasr_groups(response: str) -> list[list[ToolCall]]:
    """ViLaSR's ``allindex``: one image per index, boxes collected before movements, as ToolCalls."""
    boxes, movements = vilasr_parse(response)
    allindex: dict[Any, list[ToolCall]] = {}
    for b in boxes:
        allindex.setdefault(b["index"], []).append(
            ToolCall("box", {"view": b["index"], "label": b["label"], "bbox": list(b["bbox_2d"])})
        )
    for m in movements:
        allindex.setdefault(m["index"], []).append(
            ToolCall(
                "line",
                {
                    "view": m["index"],
                    "label": m["label"],
                    "start": list(m["start_point_2d"]),
                    "end": list(m["end_point_2d"]),
                },
            )
        )
    return list(allindex.values())


def _flat(groups: list[list[ToolCall]]) -> list[ToolCall]:
    return [call for group in groups for call in group]


def _normalised(calls: list[ToolCall]) -> list[ToolCall]:
    """Calls with list-valued coordinates (tuples from literal_eval become lists)."""
    return [
        ToolCall(c.name, {k: list(v) if isinstance(v, tuple) else v for k, v in c.arguments.items()}, c.id)
        for c in calls
    ]


def _rgb(view: View, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in view.image[y, x])
    return r, g, b


# ---------------------------------------------------------------------------------------------------
# sketchmind protocol
# ---------------------------------------------------------------------------------------------------


def test_sketchmind_system_prompt_lists_every_tool() -> None:
    protocol = SketchMindProtocol()
    tools = specs()
    prompt = protocol.system_prompt(tools)
    assert len(tools) >= 9
    for spec in tools:
        function = spec["function"]
        line = next((ln for ln in prompt.splitlines() if ln.startswith(f"- {function['name']}(")), None)
        assert line is not None, f"tool {function['name']} missing from the prompt"
        assert function["description"] in line
        for required in function["parameters"].get("required", []):
            assert required in line
    assert "<tool_call>" in prompt and "<answer>" in prompt and "<think>" in prompt
    assert "pixels" in prompt
    assert "0-1000" in SketchMindProtocol("norm1000").system_prompt(tools)


def test_sketchmind_parses_a_clean_turn_with_two_calls() -> None:
    text = (
        "<think>The cat is left of the dog. Let me box both and join them.</think>\n"
        '<tool_call>{"name": "box", "arguments": {"bbox": [10, 20, 110, 220], "label": "cat"}}</tool_call>\n'
        '<tool_call>{"name": "line", "arguments": {"start": [60, 120], "end": [300, 120], "arrow": true}}</tool_call>'
    )
    turn = SketchMindProtocol().parse(text)
    assert isinstance(turn, ParsedTurn)
    assert turn.thought == "The cat is left of the dog. Let me box both and join them."
    assert turn.calls == [
        ToolCall("box", {"bbox": [10, 20, 110, 220], "label": "cat"}),
        ToolCall("line", {"start": [60, 120], "end": [300, 120], "arrow": True}),
    ]
    assert turn.errors == [] and turn.answer is None and not turn.done


def test_sketchmind_parses_an_answer() -> None:
    turn = SketchMindProtocol().parse("<think>Both boxes overlap, so yes.</think>\n<answer> B </answer>")
    assert turn.answer == "B" and turn.done
    assert turn.thought == "Both boxes overlap, so yes."
    assert turn.calls == [] and turn.errors == []
    # An assistant message dict works the same way.
    assert SketchMindProtocol().parse({"role": "assistant", "content": "<answer>42</answer>"}).answer == "42"


BOX = ToolCall("box", {"bbox": [10, 20, 30, 40], "label": "A"})
SLIPS = {
    "missing </tool_call>": '<think>t</think><tool_call>{"name": "box", "arguments": {"bbox": [10, 20, 30, 40], "label": "A"}}',
    "json fence inside tool_call": '<tool_call>\n```json\n{"name": "box", "arguments": {"bbox": [10, 20, 30, 40], "label": "A"}}\n```\n</tool_call>',
    "single quotes": "<tool_call>{'name': 'box', 'arguments': {'bbox': [10, 20, 30, 40], 'label': 'A'}}</tool_call>",
    "trailing commas": '<tool_call>{"name": "box", "arguments": {"bbox": [10, 20, 30, 40,], "label": "A",},}</tool_call>',
    "openai nesting, string arguments": (
        '<tool_call>{"type": "function", "function": {"name": "box", '
        '"arguments": "{\\"bbox\\": [10, 20, 30, 40], \\"label\\": \\"A\\"}"}}</tool_call>'
    ),
    "args alias": '<tool_call>{"name": "box", "args": {"bbox": [10, 20, 30, 40], "label": "A"}}</tool_call>',
    "parameters alias": '<tool_call>{"name": "box", "parameters": {"bbox": [10, 20, 30, 40], "label": "A"}}</tool_call>',
    "flat arguments": '<tool_call>{"name": "box", "bbox": [10, 20, 30, 40], "label": "A"}</tool_call>',
    "tool name as key": '<tool_call>{"box": {"bbox": [10, 20, 30, 40], "label": "A"}}</tool_call>',
    "untagged json fence": 'I will draw.\n```json\n{"name": "box", "arguments": {"bbox": [10, 20, 30, 40], "label": "A"}}\n```',
    "uppercase tool name": '<tool_call>{"name": "BOX", "arguments": {"bbox": [10, 20, 30, 40], "label": "A"}}</tool_call>',
}


@pytest.mark.parametrize("text", SLIPS.values(), ids=SLIPS.keys())
def test_sketchmind_accepts_common_slips(text: str) -> None:
    turn = SketchMindProtocol().parse(text)
    assert turn.calls == [BOX], turn
    assert turn.errors == [] and turn.answer is None
    # The parsed call is one the canvas can execute.
    assert isinstance(Canvas(None, whiteboard_size=(64, 64)).apply(turn.calls[0].name, turn.calls[0].arguments), View)


def test_sketchmind_slips_across_several_calls() -> None:
    """Two unterminated calls in a row split at the next tag; a list in one tag is two calls."""
    text = (
        '<tool_call>{"name": "box", "arguments": {"bbox": [10, 20, 30, 40], "label": "A"}}\n'
        '<tool_call>[{"name": "point", "arguments": {"point": [5, 5]}}, {"name": "crop", "args": {"bbox": [0, 0, 8, 8]}}]'
    )
    turn = SketchMindProtocol().parse(text)
    assert turn.calls == [
        BOX,
        ToolCall("point", {"point": [5, 5]}),
        ToolCall("crop", {"bbox": [0, 0, 8, 8]}),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "I think the answer might be B but let me look again.",
        "<think>just thinking</think>",
        "",
    ],
)
def test_sketchmind_text_without_call_or_answer_is_an_error(text: str) -> None:
    turn = SketchMindProtocol().parse(text)
    assert turn.calls == [] and turn.answer is None
    assert turn.errors and "<tool_call>" in turn.errors[0]


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>not json at all</tool_call>",
        "<tool_call></tool_call>",
        "<tool_call>[]</tool_call>",
        "<tool_call>[",
        '<tool_call>{"arguments": {"bbox": [1, 2, 3, 4]}}</tool_call>',
        '<tool_call>{"name": "box", "arguments": [1, 2, 3, 4]}</tool_call>',
        "<tool_call>42</tool_call>",
    ],
)
def test_sketchmind_unreadable_calls_are_errors_not_silence(text: str) -> None:
    turn = SketchMindProtocol().parse(text)
    assert turn.calls == [] and turn.answer is None
    assert turn.errors and all(isinstance(e, str) and e for e in turn.errors)


def test_sketchmind_observation_shows_views_and_errors(image_640x480: np.ndarray) -> None:
    protocol = SketchMindProtocol()
    canvas = Canvas(image_640x480)
    good = ToolCall("box", {"bbox": [10, 10, 100, 100], "label": "A"})
    bad = ToolCall("point", {"point": [900, 10]})
    results = [
        ToolResult((good,), canvas.apply(good.name, good.arguments)),
        ToolResult((bad,), canvas.apply(bad.name, bad.arguments)),
    ]
    assert isinstance(results[0].outcome, View) and isinstance(results[1].outcome, ActionError)
    messages = protocol.observation(results, errors=["could not read a JSON tool call from 'x'"])
    assert len(messages) == 1 and messages[0]["role"] == "user"
    parts = messages[0]["content"]
    assert parts[0] == {
        "type": "text",
        "text": "<observation>error: could not read a JSON tool call from 'x'</observation>",
    }
    assert parts[1] == {"type": "text", "text": "<observation>view 2: box 'A' on view 1 (640x480)</observation>"}
    assert parts[2] == {"type": "image", "view": 2}
    assert parts[3]["type"] == "text" and parts[3]["text"].startswith("<observation>error: point point: x=900")
    assert [p["view"] for p in parts if p["type"] == "image"] == [2]
    assert "No more tool calls" not in json.dumps(parts)

    final = protocol.observation(results, final=True)[0]["content"]
    assert final[-1]["type"] == "text"
    assert "No more tool calls" in final[-1]["text"] and "<answer>" in final[-1]["text"]
    assert final[:-1] == parts[1:]


def test_sketchmind_first_message_has_the_image_then_the_question() -> None:
    message = SketchMindProtocol().first_message("How many cats?")
    assert message == {
        "role": "user",
        "content": [{"type": "image", "view": 1}, {"type": "text", "text": "How many cats?"}],
    }
    assert SketchMindProtocol().first_message("Q", has_image=False)["content"] == [{"type": "text", "text": "Q"}]


# ---------------------------------------------------------------------------------------------------
# vilasr protocol
# ---------------------------------------------------------------------------------------------------


def test_vilasr_system_prompt_is_verbatim() -> None:
    prompt = ViLaSRProtocol().system_prompt(specs(), image_size=(476, 476))
    assert "bottom-right corner is (476, 476)" in prompt
    for line in (
        "You are a spatial reasoning assistant with access to two powerful visualization tools.",
        '    "index": i, # Image index',
        '    "bbox_2d": [x1, y1, x2, y2],',
        '    "start_point_2d": [x1, y1],',
        "<think> [Your detailed reasoning process] </think> Action: [Object Mapper/Path Tracer]",
        "<think> [Your detailed reasoning process] </think> Action: Answer",
        "<answer> [Your final answer] </answer>",
        "     * If errors found, backtrack to previous step to modify actions or decisions as needed",
    ):
        assert line in prompt.splitlines()
    assert prompt == VILASR_SYSTEM_PROMPT_476
    assert "(640, 448)" in ViLaSRProtocol().system_prompt(specs(), image_size=(640, 448))
    with pytest.raises(ValueError, match="image_size"):
        ViLaSRProtocol().system_prompt(specs())


def test_vilasr_first_message_uses_the_prompt_template() -> None:
    message = ViLaSRProtocol().first_message("Which object is closer to the door?")
    assert message["role"] == "user"
    assert message["content"][0] == {"type": "image", "view": 1}
    assert message["content"][1] == {
        "type": "text",
        "text": "\n### Question:\nWhich object is closer to the door?\nThe index of the given image is 1.\n\n"
        "Begin your reasoning. After each tool use, critically evaluate the visualization and adjust if needed:\n",
    }


OBJECT_MAPPER = """<think> I need to locate the sofa and the lamp first. </think> Action: Object Mapper
```json
[{"index": 1, "bbox_2d": [40, 40, 140, 140], "label": "sofa"}, {"index": 1, "bbox_2d": [200, 40, 300, 140], "label": "lamp"}]
```"""
PYTHON_LITERAL = """<think> Mark the two chairs. </think> Action: Object Mapper
```json
[{
    'index': 1, # Image index
    'bbox_2d': [40, 200, 140, 300],
    'label': 'chair 1'
}, {
    'index': 1, # Image index
    'bbox_2d': [200, 200, 300, 300],
    'label': "chair 2"
}]
```"""
PATH_TRACER = """<think> Now trace the path from the door to the window. </think> Action: Path Tracer
```json
[{"index": 2, "start_point_2d": [50, 400], "end_point_2d": [400, 400], "label": "door to window"}]
```"""
MIXED_INDICES = """<think> Box on the original, trace on the marked one. </think> Action: Object Mapper
```json
[{"index": 1, "bbox_2d": [40, 40, 140, 140], "label": "table"}, {"index": 2, "start_point_2d": [50, 400], "end_point_2d": [400, 400], "label": "route"}, {"index": 1, "bbox_2d": [200, 40, 300, 140], "label": "bed"}]
```"""
UNCLOSED = """<think> Box the bed.
Action: Object Mapper
```json
[{"index": 1, "bbox_2d": [200, 40, 300, 140], "label": "bed"}]
</think>"""
LINES_FIRST = """<think> Trace on 2 first, then box on 1. </think> Action: Path Tracer
```json
[{"index": 2, "start_point_2d": [50, 400], "end_point_2d": [400, 400], "label": "route"}]
```
Action: Object Mapper
```json
[{"index": 1, "bbox_2d": [40, 40, 140, 140], "label": "table"}]
```"""
VILASR_OUTPUTS = {
    "object mapper": OBJECT_MAPPER,
    "python literal with comments": PYTHON_LITERAL,
    "path tracer": PATH_TRACER,
    "mixed indices": MIXED_INDICES,
    "closing fence missing": UNCLOSED,
    "lines before boxes": LINES_FIRST,
}


@pytest.mark.parametrize("text", VILASR_OUTPUTS.values(), ids=VILASR_OUTPUTS.keys())
def test_vilasr_parses_what_vilasr_would_draw(text: str) -> None:
    """Same calls and same per-index grouping as ViLaSR's own parser on its own format."""
    protocol = ViLaSRProtocol()
    turn = protocol.parse(text)
    expected = vilasr_groups(text)
    assert expected, "the reference parser must accept the example"
    assert turn.errors == [] and turn.answer is None
    assert sorted(map(repr, _normalised(turn.calls))) == sorted(map(repr, _flat(expected)))
    assert [_normalised(g) for g in protocol.group(turn.calls)] == expected


def test_vilasr_parse_details() -> None:
    protocol = ViLaSRProtocol()
    turn = protocol.parse(PYTHON_LITERAL)
    assert turn.thought == "Mark the two chairs."
    assert turn.calls == [
        ToolCall("box", {"view": 1, "label": "chair 1", "bbox": [40, 200, 140, 300]}),
        ToolCall("box", {"view": 1, "label": "chair 2", "bbox": [200, 200, 300, 300]}),
    ]
    assert protocol.parse(PATH_TRACER).calls == [
        ToolCall("line", {"view": 2, "label": "door to window", "start": [50, 400], "end": [400, 400]})
    ]
    assert protocol.parse(UNCLOSED).calls == [ToolCall("box", {"view": 1, "label": "bed", "bbox": [200, 40, 300, 140]})]


def test_vilasr_group_one_per_index_in_first_appearance_order() -> None:
    protocol = ViLaSRProtocol()
    calls = protocol.parse(MIXED_INDICES).calls
    groups = protocol.group(calls)
    assert [[c.arguments["view"] for c in g] for g in groups] == [[1, 1], [2]]
    assert [c.arguments["label"] for c in groups[0]] == ["table", "bed"]
    three = [ToolCall("box", {"view": v, "bbox": [0, 0, 1, 1]}) for v in (3, 1, 3, 2, 1)]
    assert [[c.arguments["view"] for c in g] for g in protocol.group(three)] == [[3, 3], [1, 1], [2]]
    # ViLaSR gathers every box before any path: an index first named by a path comes after the boxes' indices.
    groups = protocol.group(protocol.parse(LINES_FIRST).calls)
    assert [[c.name for c in g] for g in groups] == [["box"], ["line"]]
    assert [g[0].arguments["view"] for g in groups] == [1, 2]


def _vilasr_canvas() -> Canvas:
    return Canvas(np.full((476, 476, 3), 255, dtype=np.uint8), style="vilasr")


def _apply_groups(canvas: Canvas, protocol: ViLaSRProtocol, text: str) -> list[View | ActionError]:
    return [canvas.apply_group([(c.name, c.arguments) for c in g]) for g in protocol.group(protocol.parse(text).calls)]


def test_vilasr_groups_draw_one_view_each_with_vilasr_pixels() -> None:
    protocol = ViLaSRProtocol()
    canvas = _vilasr_canvas()

    (boxes,) = _apply_groups(canvas, protocol, OBJECT_MAPPER)
    assert isinstance(boxes, View) and boxes.index == 2 and boxes.parent == 1 and len(canvas) == 2
    # First box red, second green (by position), 4 px outlines.
    assert _rgb(boxes, 40, 90) == RED and _rgb(boxes, 43, 90) == RED and _rgb(boxes, 44, 90) == WHITE
    assert _rgb(boxes, 140, 90) == RED and _rgb(boxes, 90, 40) == RED
    assert _rgb(boxes, 200, 90) == GREEN and _rgb(boxes, 300, 90) == GREEN
    assert _rgb(boxes, 250, 90) == WHITE and _rgb(boxes, 90, 100) == WHITE

    (traced,) = _apply_groups(canvas, protocol, PATH_TRACER)  # index 2: on the boxes' view
    assert isinstance(traced, View) and traced.index == 3 and traced.parent == 2 and len(canvas) == 3
    column = traced.image[380:420, 225]
    black = [y for y, px in enumerate(column, start=380) if tuple(int(c) for c in px) == BLACK]
    assert len(black) == 4 and black == list(range(black[0], black[0] + 4)), "a black line 4 px wide"
    assert _rgb(traced, 50, 400) == RED and _rgb(traced, 400, 400) == BLUE
    assert _rgb(traced, 40, 90) == RED and _rgb(traced, 200, 90) == GREEN, "the parent's boxes stay"


def test_vilasr_mixed_indices_make_one_view_per_index() -> None:
    protocol = ViLaSRProtocol()
    canvas = _vilasr_canvas()
    canvas.apply_group([("box", {"view": 1, "bbox": [300, 300, 400, 400], "label": "rug"})])  # view 2
    views = _apply_groups(canvas, protocol, MIXED_INDICES)
    assert all(isinstance(v, View) for v in views)
    on_1, on_2 = views
    assert isinstance(on_1, View) and isinstance(on_2, View)
    assert (on_1.index, on_1.parent, on_2.index, on_2.parent) == (3, 1, 4, 2) and len(canvas) == 4
    assert _rgb(on_1, 40, 90) == RED and _rgb(on_1, 200, 90) == GREEN and _rgb(on_1, 300, 350) == WHITE
    assert _rgb(on_2, 300, 350) == RED and _rgb(on_2, 50, 400) == RED and _rgb(on_2, 400, 400) == BLUE
    assert _rgb(on_2, 40, 90) == WHITE


def test_vilasr_same_label_on_the_original_view_replaces_the_mark() -> None:
    protocol = ViLaSRProtocol()
    canvas = _vilasr_canvas()
    first = protocol.parse('```json\n[{"index": 1, "bbox_2d": [40, 40, 140, 140], "label": "cat"}]\n```')
    moved = protocol.parse('```json\n[{"index": 1, "bbox_2d": [200, 200, 300, 300], "label": "cat"}]\n```')
    (old,) = [canvas.apply_group([(c.name, c.arguments) for c in g]) for g in protocol.group(first.calls)]
    (new,) = [canvas.apply_group([(c.name, c.arguments) for c in g]) for g in protocol.group(moved.calls)]
    assert isinstance(old, View) and isinstance(new, View) and new.index == 3 and new.parent == 1
    assert _rgb(old, 40, 90) == RED
    assert np.array_equal(new.image[30:150, 30:150], np.full((120, 120, 3), 255, np.uint8)), "old box gone"
    assert _rgb(new, 200, 250) == RED and len(new.marks) == 1


def test_vilasr_observation_text_is_verbatim() -> None:
    protocol = ViLaSRProtocol()
    canvas = _vilasr_canvas()
    calls = protocol.parse(OBJECT_MAPPER).calls
    view = canvas.apply_group([(c.name, c.arguments) for c in calls])
    assert isinstance(view, View)
    results = [ToolResult(tuple(calls), view)]

    (message,) = protocol.observation(results)
    assert message["role"] == "user"
    assert message["content"] == [
        {"type": "image", "view": 2},
        {
            "type": "text",
            "text": "\nThe index of the given image is 2 (width: 476, height: 476). Continue your reasoning. "
            "After each tool use, critically evaluate the visualization and adjust if needed:\n",
        },
    ]
    assert message["content"][1]["text"] == "\n" + VILASR_INTERMEDIATE.format(n=2, w=476, h=476) + "\n"

    (final,) = protocol.observation(results, final=True)
    assert final["content"][1]["text"] == "\n" + VILASR_FINAL.format(n=2, w=476, h=476) + "\n"
    assert final["content"][1]["text"] == (
        "\nThe index of the given image is 2 (width: 476, height: 476). Then, you can not invoke the Object Mapper "
        "or Path Tracer tool. Please answer the initial question and structure your response as required:\n"
    )


def test_vilasr_observation_of_several_images() -> None:
    """ViLaSR: each image but the last is followed by its index line; the last by the prompt and a blank line."""
    protocol = ViLaSRProtocol()
    canvas = _vilasr_canvas()
    canvas.apply_group([("box", {"view": 1, "bbox": [300, 300, 400, 400], "label": "rug"})])
    calls = protocol.parse(MIXED_INDICES).calls
    results = [
        ToolResult(tuple(g), canvas.apply_group([(c.name, c.arguments) for c in g])) for g in protocol.group(calls)
    ]
    (message,) = protocol.observation(results)
    assert message["content"] == [
        {"type": "image", "view": 3},
        {"type": "text", "text": "The index of the given image is 3 (width: 476, height: 476).\n"},
        {"type": "image", "view": 4},
        {"type": "text", "text": VILASR_INTERMEDIATE.format(n=4, w=476, h=476) + "\n\n"},
    ]


def test_vilasr_errors_go_back_as_text() -> None:
    protocol = ViLaSRProtocol()
    canvas = _vilasr_canvas()
    call = ToolCall("box", {"view": 1, "bbox": [40, 40, 900, 140], "label": "wall"})
    outcome = canvas.apply_group([(call.name, call.arguments)])
    assert isinstance(outcome, ActionError) and len(canvas) == 1
    (message,) = protocol.observation([ToolResult((call,), outcome)], errors=["bad block"])
    texts = [p["text"] for p in message["content"]]
    assert all(p["type"] == "text" for p in message["content"])
    assert texts[0] == "Error: bad block\n" and texts[1].startswith("Error: box bbox: x=900")
    assert texts[-1] == "Continue your reasoning.\n"


def test_vilasr_answer_and_bad_turns() -> None:
    protocol = ViLaSRProtocol()
    turn = protocol.parse("<think> The lamp is closer. </think> Action: Answer\n<answer> B </answer>")
    assert turn.answer == "B" and turn.done and turn.thought == "The lamp is closer." and turn.calls == []
    for text in (
        "<think> no tool </think> Action: Object Mapper",
        "```json\n[]\n```",
        "```json\nnot a list\n```",
        '```json\n[{"index": 1, "label": "no coordinates"}]\n```',
    ):
        bad = protocol.parse(text)
        assert bad.calls == [] and bad.answer is None and bad.errors, text


# ---------------------------------------------------------------------------------------------------
# openai-tools protocol
# ---------------------------------------------------------------------------------------------------


def _tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def test_openai_parses_structured_tool_calls_with_ids() -> None:
    message = {
        "role": "assistant",
        "content": "I will box the cat and trace to the dog.",
        "tool_calls": [
            _tool_call("call_a", "box", {"bbox": [10, 20, 30, 40], "label": "cat"}),
            _tool_call("call_b", "line", {"start": [20, 30], "end": [90, 30]}),
        ],
    }
    turn = OpenAIToolsProtocol().parse(message)
    assert turn.calls == [
        ToolCall("box", {"bbox": [10, 20, 30, 40], "label": "cat"}, "call_a"),
        ToolCall("line", {"start": [20, 30], "end": [90, 30]}, "call_b"),
    ]
    assert turn.thought == "I will box the cat and trace to the dog."
    assert turn.answer is None and turn.errors == []
    # SDK objects (attribute access, not dicts) read the same.
    sdk = SimpleNamespace(
        content=None,
        tool_calls=[SimpleNamespace(id="c1", function=SimpleNamespace(name="point", arguments='{"point": [1, 2]}'))],
    )
    assert OpenAIToolsProtocol().parse(sdk).calls == [ToolCall("point", {"point": [1, 2]}, "c1")]


def test_openai_answer_tool_and_plain_content() -> None:
    protocol = OpenAIToolsProtocol()
    turn = protocol.parse({"content": "Done.", "tool_calls": [_tool_call("x", "answer", {"answer": " C "})]})
    assert turn.answer == "C" and turn.calls == []
    plain = protocol.parse({"role": "assistant", "content": "The answer is 7.", "tool_calls": None})
    assert plain.answer == "The answer is 7." and plain.calls == [] and plain.errors == []
    tagged = protocol.parse("Counting the boxes... <answer>7</answer>")
    assert tagged.answer == "7" and tagged.thought == "Counting the boxes..."


def test_openai_bad_arguments_are_errors() -> None:
    message = {
        "content": "",
        "tool_calls": [{"id": "x", "type": "function", "function": {"name": "box", "arguments": "[1, 2"}}],
    }
    turn = OpenAIToolsProtocol().parse(message)
    assert turn.calls == [] and turn.answer is None and turn.errors
    assert "box" in turn.errors[0]


def test_openai_observation_tool_messages_then_images(image_640x480: np.ndarray) -> None:
    protocol = OpenAIToolsProtocol()
    canvas = Canvas(image_640x480)
    box = ToolCall("box", {"bbox": [10, 20, 30, 40], "label": "cat"}, "call_a")
    bad = ToolCall("line", {"start": [0, 0], "end": [999, 0]}, "call_b")
    zoom = ToolCall("zoom", {"factor": 2, "bbox": [0, 0, 50, 50]}, "call_c")
    results = [ToolResult((c,), canvas.apply(c.name, c.arguments)) for c in (box, bad, zoom)]
    messages = protocol.observation(results)
    assert [m["role"] for m in messages] == ["tool", "tool", "tool", "user"]
    assert [m["tool_call_id"] for m in messages[:3]] == ["call_a", "call_b", "call_c"]
    for m in messages[:3]:
        assert all(p["type"] == "text" for p in m["content"]), "no images inside tool messages"
    assert messages[0]["content"][0]["text"] == "view 2: box 'cat' on view 1 (640x480)"
    assert messages[1]["content"][0]["text"].startswith("error: line end: x=999")
    images = [p["view"] for p in messages[3]["content"] if p["type"] == "image"]
    assert images == [2, 3]
    assert "view 2" in messages[3]["content"][0]["text"] and "view 3" in messages[3]["content"][0]["text"]
    final = protocol.observation(results, final=True)
    assert "final answer" in final[-1]["content"][-1]["text"]
    # Only errors: tool messages and the error text, no images.
    only_errors = protocol.observation([results[1]], errors=["oops"])
    assert [m["role"] for m in only_errors] == ["tool", "user"]
    assert only_errors[1]["content"] == [{"type": "text", "text": "error: oops"}]


# ---------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------


def test_get_protocol() -> None:
    assert set(PROTOCOLS) == {"sketchmind", "vilasr", "openai-tools", "search"}
    assert isinstance(get_protocol("sketchmind"), SketchMindProtocol)
    assert isinstance(get_protocol("vilasr"), ViLaSRProtocol)
    assert isinstance(get_protocol("openai-tools"), OpenAIToolsProtocol)
    assert get_protocol("sketchmind", "norm1000").convention.value == "norm1000"
    with pytest.raises(ValueError) as excinfo:
        get_protocol("hermes")
    message = str(excinfo.value)
    assert "\n" not in message and "hermes" in message
    assert all(name in message for name in PROTOCOLS)
