"""The default protocol: ``<think>`` text, ``<tool_call>{json}</tool_call>`` calls, ``<answer>``.

It is the Hermes/Qwen tool-call format most open VLMs already know, with every tool's arguments
listed in the prompt. The parser accepts the slips models commonly make: a missing closing tag,
Markdown fences, single quotes or trailing commas, OpenAI-style nesting and argument aliases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sketchmind.actions import ACTIONS
from sketchmind.canvas import View
from sketchmind.protocols.base import (
    Message,
    ModelOutput,
    ParsedTurn,
    Protocol,
    ToolCall,
    ToolResult,
    image_part,
    outcome_text,
    text_part,
)
from sketchmind.protocols.jsonish import calls_from_text

_THINK = re.compile(r"<think>(.*?)(?:</think>|(?=<tool_call>|<answer>)|\Z)", re.S | re.I)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>|<answer>)|\Z)", re.S | re.I)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.S | re.I)
_JSON_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\}|\[.*?\])\s*```", re.S)
_TAG = re.compile(r"</?(?:think|tool_call|answer)>", re.I)

SYSTEM_TEMPLATE = """You are a visual reasoner who thinks by drawing. Images are numbered views: view 1 is the input image, and every drawing you make creates a new view that you will see next.

At each turn, first think inside <think> </think>. Then either call one or more tools, each as
<tool_call>{{"name": "<tool>", "arguments": {{...}}}}</tool_call>
or give the final answer as <answer> ... </answer>.

Coordinates are {coords}. Points are [x, y]; boxes are [x1, y1, x2, y2]. A mark drawn again with the same label replaces the old one.

Tools:
{tools}"""

FINAL_NOTE = "No more tool calls are allowed. Give your final answer now as <answer>...</answer>."

COORD_WORDING = {
    "pixels": "absolute pixels of the view you draw on, (0, 0) at its top-left corner",
    "norm1000": "normalised to 0-1000 on both axes of the view you draw on",
    "unit": "normalised to 0-1 on both axes of the view you draw on",
}


def describe_tools(tools: Sequence[Mapping[str, Any]]) -> str:
    """One line per tool: name, arguments (required first, optional with '?'), and what it does."""
    lines = []
    for spec in tools:
        function = spec.get("function", spec)
        params = function.get("parameters", {})
        required = set(params.get("required", []))
        props = params.get("properties", {})
        args = [name if name in required else f"{name}?" for name in props]
        lines.append(f"- {function['name']}({', '.join(args)}): {function.get('description', '')}")
    return "\n".join(lines)


class SketchMindProtocol(Protocol):
    """``<think>`` / ``<tool_call>`` / ``<answer>``, coordinates in view pixels by default."""

    name = "sketchmind"

    def system_prompt(self, tools: Sequence[Mapping[str, Any]], image_size: tuple[int, int] | None = None) -> str:
        return SYSTEM_TEMPLATE.format(coords=COORD_WORDING[self.convention.value], tools=describe_tools(tools))

    def parse(self, output: ModelOutput) -> ParsedTurn:
        text = output if isinstance(output, str) else str(output.get("content") or "")
        turn = ParsedTurn()
        think = _THINK.search(text)
        first_tag = _TAG.search(text)
        if think:
            turn.thought = think.group(1).strip()
        elif first_tag:
            turn.thought = text[: first_tag.start()].strip()
        answer = _ANSWER.search(text)
        if answer:
            turn.answer = answer.group(1).strip()
            return turn  # an answer ends the episode; calls beside it would never be seen
        known = frozenset(ACTIONS)
        blocks = [m.group(1) for m in _TOOL_CALL.finditer(text)]
        if not blocks:
            # A common slip: the call as a fenced JSON block with no <tool_call> tags.
            blocks = [m.group(1) for m in _JSON_FENCE.finditer(text) if '"name"' in m.group(1)]
        for block in blocks:
            calls, errors = calls_from_text(block, known)
            turn.calls.extend(calls)
            turn.errors.extend(errors)
        if not blocks:
            if not think and not first_tag:
                turn.thought = text.strip()
            turn.errors.append(
                'no <tool_call> or <answer> found: call a tool as <tool_call>{"name": ..., "arguments": {...}}'
                "</tool_call> or finish with <answer>...</answer>"
            )
        return turn

    def format_turn(self, thought: str, calls: Sequence[ToolCall] = (), answer: str | None = None) -> str:
        head = f"<think>{thought}</think>"
        if answer is not None:
            return f"{head}<answer>{answer}</answer>"
        return head + "".join(format_call(call.name, call.arguments) for call in calls)

    def observation(
        self, results: Sequence[ToolResult], errors: Sequence[str] = (), final: bool = False
    ) -> list[Message]:
        parts: list[dict[str, Any]] = [text_part(f"<observation>error: {e}</observation>") for e in errors]
        for result in results:
            parts.append(text_part(f"<observation>{outcome_text(result)}</observation>"))
            if isinstance(result.outcome, View):
                parts.append(image_part(result.outcome.index))
        if final:
            parts.append(text_part(FINAL_NOTE))
        return [{"role": "user", "content": parts}]


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A tool call written the way this protocol expects it (used for expert trajectories)."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': dict(arguments)})}</tool_call>"
