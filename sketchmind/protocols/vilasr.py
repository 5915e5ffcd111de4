"""ViLaSR's exact format, so its released Qwen2.5-VL-7B checkpoint runs unchanged.

Prompt, question template and observation strings are copied verbatim from ViLaSR's
``eval/infer.py`` (AntResearchNLP/ViLaSR). The model writes
``<think>...</think> Action: Object Mapper`` followed by a fenced JSON list of
``{"index", "bbox_2d", "label"}`` boxes or ``{"index", "start_point_2d", "end_point_2d", "label"}``
lines, and finishes with ``<answer>...</answer>``. All objects aimed at one image index draw one new
image together, as in ViLaSR. Where ViLaSR would abort the episode on a malformed call, we send the
error back to the model instead.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sketchmind.canvas import View
from sketchmind.protocols.base import (
    Message,
    ModelOutput,
    ParsedTurn,
    Protocol,
    ToolCall,
    ToolResult,
    image_part,
    text_part,
)
from sketchmind.protocols.jsonish import loads

# Verbatim from ViLaSR eval/infer.py (a str.format template: {{ }} are literal braces).
SYSTEM_PROMPT = """### Guidance:
You are a spatial reasoning assistant with access to two powerful visualization tools.
Your task is to break down complex spatial problems and iteratively refine your solution through visualization feedback.

### Available tools:
You can use the following two tools to visualize. After each tool usage, you must wait for and analyze the visualization feedback before proceeding.

1. **Object Mapper**
- Purpose: Identifies and maps key items in the space
- Input format: JSON
```json
[{{
    "index": i, # Image index
    "bbox_2d": [x1, y1, x2, y2],
    "label": "object name/description"
}}]
```
- Output: Generates bounding boxes for visual inspection of the i-th image

2. **Path Tracer**
- Purpose: Plots movement or connections between points
- Input format: JSON
```json
[{{
    "index": i, # Image index
    "start_point_2d": [x1, y1],
    "end_point_2d": [x2, y2],
    "label": "trace_description"
}}]
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
   - Provide absolute coordinates in JSON format (The top-left corner of the image is (0, 0) and the bottom-right corner is ({width}, {height}))
   - Observe the visualization output
   - Reflect on the visualization:
     * Is the placement/path accurate?
     * Does it align with your reasoning?
     * What adjustments are needed?
   - Backtrack and Adjust:
     * If errors found, backtrack to previous step to modify actions or decisions as needed"""

PROMPT_TEMPLATE = """
### Question:
{question}

Begin your reasoning. After each tool use, critically evaluate the visualization and adjust if needed:
"""

INDEX_NOTE = "\nThe index of the given image is 1."
IMAGE_INDEX = "The index of the given image is {index} (width: {width}, height: {height})."
INTERMEDIATE_PROMPT = IMAGE_INDEX + (
    " Continue your reasoning. After each tool use, critically evaluate the visualization and adjust if needed:"
)
FINAL_PROMPT = IMAGE_INDEX + (
    " Then, you can not invoke the Object Mapper or Path Tracer tool."
    " Please answer the initial question and structure your response as required:"
)

# ViLaSR resizes inputs with qwen_vl_utils to at most 448*28*28 pixels (eval/infer.sh), sides multiples of 28.
IMAGE_MAX_PIXELS = 351_232
# ViLaSR's own budgets (10 turns, 20 on mazes, 45 images) are the agent's to enforce: see ``agent.Budgets``.

_BLOCK = re.compile(r"```json[ \t]*\n(.*?)(?:```|</think>|\Z)", re.S | re.I)
_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.S | re.I)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*(?:</answer>|\Z)", re.S | re.I)


def _to_call(obj: Any) -> ToolCall | str:
    """One ViLaSR object -> a box or line call on the image it names."""
    if not isinstance(obj, Mapping):
        return f'each item must be a JSON object with "index", got {type(obj).__name__}'
    arguments: dict[str, Any] = {}
    if "index" in obj:
        arguments["view"] = obj["index"]
    if obj.get("label") is not None:
        arguments["label"] = str(obj["label"])
    if "bbox_2d" in obj:
        return ToolCall("box", {**arguments, "bbox": obj["bbox_2d"]})
    if "start_point_2d" in obj and "end_point_2d" in obj:
        return ToolCall("line", {**arguments, "start": obj["start_point_2d"], "end": obj["end_point_2d"]})
    return 'an object needs "bbox_2d" (Object Mapper) or "start_point_2d" and "end_point_2d" (Path Tracer)'


class ViLaSRProtocol(Protocol):
    """ViLaSR's prompt, JSON blocks and observation text; boxes and black lines in its style."""

    name = "vilasr"
    style = "vilasr"
    image_max_pixels = IMAGE_MAX_PIXELS

    def system_prompt(self, tools: Sequence[Mapping[str, Any]], image_size: tuple[int, int] | None = None) -> str:
        if image_size is None:
            raise ValueError("the vilasr prompt states the image size: pass image_size=(width, height)")
        return SYSTEM_PROMPT.format(width=image_size[0], height=image_size[1])

    def first_message(self, question: str, has_image: bool = True) -> Message:
        text = PROMPT_TEMPLATE.format(question=question + (INDEX_NOTE if has_image else ""))
        return {"role": "user", "content": [image_part(1), text_part(text)] if has_image else [text_part(text)]}

    def parse(self, output: ModelOutput) -> ParsedTurn:
        text = output if isinstance(output, str) else str(output.get("content") or "")
        think = _THINK.search(text)
        turn = ParsedTurn(thought=think.group(1).strip() if think else "")
        answer = _ANSWER.search(text)
        if answer:
            turn.answer = answer.group(1).strip()
            return turn
        blocks = [m.group(1) for m in _BLOCK.finditer(text)]
        if not blocks:
            turn.errors.append("no ```json block found: draw with Object Mapper or Path Tracer, or give <answer>")
        for block in blocks:
            value = loads(block)
            if value is None:
                turn.errors.append(f"could not read the JSON block {' '.join(block.split())[:60]!r}")
                continue
            for item in value if isinstance(value, list) else [value]:
                call = _to_call(item)
                if isinstance(call, str):
                    turn.errors.append(call)
                else:
                    turn.calls.append(call)
        if not turn.calls and not turn.errors:  # e.g. an empty list: ViLaSR stops here with "ToolError"
            turn.errors.append("the ```json block has no Object Mapper or Path Tracer objects")
        return turn

    def format_turn(self, thought: str, calls: Sequence[ToolCall] = (), answer: str | None = None) -> str:
        """ViLaSR's own layout; boxes go to Object Mapper, lines and paths (as lines) to Path Tracer."""
        head = f"<think>{thought}</think>"
        if answer is not None:
            return f"{head} <answer>{answer}</answer>"
        boxes: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        for call in calls:
            args, index = call.arguments, call.arguments.get("view")
            if index is None:
                raise ValueError("ViLaSR calls name their image: give every expert call a view")
            label = {"label": args["label"]} if args.get("label") else {}
            if call.name == "box":
                boxes.append({"index": index, "bbox_2d": args["bbox"], **label})
            elif call.name == "line":
                lines.append({"index": index, "start_point_2d": args["start"], "end_point_2d": args["end"], **label})
            elif call.name == "path":
                points = args["points"]
                for k, (start, end) in enumerate(itertools.pairwise(points), 1):
                    piece = {"label": f"{args['label']}.{k}"} if args.get("label") else {}
                    lines.append({"index": index, "start_point_2d": start, "end_point_2d": end, **piece})
            else:
                raise ValueError(f"ViLaSR has no {call.name} tool (only Object Mapper boxes and Path Tracer lines)")
        blocks = [
            f"Action: {tool}\n```json\n{json.dumps(items)}\n```"
            for tool, items in (("Object Mapper", boxes), ("Path Tracer", lines))
            if items
        ]
        return head + " " + "\n".join(blocks)

    def group(self, calls: Sequence[ToolCall]) -> list[list[ToolCall]]:
        """One new image per distinct index, in order of first appearance (ViLaSR's rule).

        ViLaSR collects all boxes before all paths, so an index first named by a box comes before
        one first named by a path, wherever they stand in the output.
        """
        groups: dict[Any, list[ToolCall]] = {}
        for call in sorted(calls, key=lambda call: call.name != "box"):  # stable: boxes, then the rest
            groups.setdefault(repr(call.arguments.get("view")), []).append(call)
        return list(groups.values())

    def observation(
        self, results: Sequence[ToolResult], errors: Sequence[str] = (), final: bool = False
    ) -> list[Message]:
        parts: list[dict[str, Any]] = [text_part(f"Error: {e}\n") for e in errors]
        parts += [text_part(f"Error: {r.outcome}\n") for r in results if not isinstance(r.outcome, View)]
        views = [r.outcome for r in results if isinstance(r.outcome, View)]
        closing = FINAL_PROMPT if final else INTERMEDIATE_PROMPT
        for i, view in enumerate(views):
            parts.append(image_part(view.index))
            if i < len(views) - 1:
                parts.append(
                    text_part(IMAGE_INDEX.format(index=view.index, width=view.width, height=view.height) + "\n")
                )
            else:
                # ViLaSR's template puts the prompt between newlines after a single image, and "\n\n" after several.
                text = closing.format(index=view.index, width=view.width, height=view.height)
                parts.append(text_part(f"\n{text}\n" if len(views) == 1 else f"{text}\n\n"))
        if not views:
            parts.append(
                text_part(("Please answer the initial question now." if final else "Continue your reasoning.") + "\n")
            )
        return [{"role": "user", "content": parts}]
