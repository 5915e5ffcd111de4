"""Native function calling (OpenAI-style ``tools=``) for API models and vLLM/Ollama servers.

The model's tool calls arrive structured; results go back as ``tool`` messages. Rendered images
follow in one ``user`` message, because vLLM (and the OpenAI API) reject images inside tool
messages. A turn with no tool call is the final answer, as in any function-calling loop.
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
from sketchmind.protocols.jsonish import to_call

_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.S | re.I)

SYSTEM_PROMPT = (
    "You are a visual reasoner who thinks by drawing. Images are numbered views: view 1 is the input "
    "image and every tool call creates a new view, which you will see next. Reason step by step, call "
    "the drawing tools to check your ideas on the image, and when you are sure call the answer tool "
    "(or reply without a tool call) with the final answer."
)


def _get(obj: Any, key: str) -> Any:
    """Read a field from a dict or from an SDK object (``openai`` returns pydantic models)."""
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


class OpenAIToolsProtocol(Protocol):
    """Tool calls through the API's ``tools`` field instead of text tags."""

    name = "openai-tools"

    def system_prompt(self, tools: Sequence[Mapping[str, Any]], image_size: tuple[int, int] | None = None) -> str:
        return SYSTEM_PROMPT

    def parse(self, output: ModelOutput | Any) -> ParsedTurn:
        content = output if isinstance(output, str) else _get(output, "content")
        text = content if isinstance(content, str) else ""
        turn = ParsedTurn(thought=text.strip())
        raw_calls = [] if isinstance(output, str) else (_get(output, "tool_calls") or [])
        known = frozenset(ACTIONS)
        for raw in raw_calls:
            function = _get(raw, "function")
            obj = {"name": _get(function, "name"), "arguments": _get(function, "arguments")} if function else raw
            result = to_call(obj, known, _get(raw, "id"))
            if isinstance(result, str):
                turn.errors.append(result)
            elif result.name == "answer":
                turn.answer = str(result.arguments.get("answer", "")).strip()
            else:
                turn.calls.append(result)
        if turn.answer is None and not turn.calls and not turn.errors:
            tagged = _ANSWER.search(text)
            turn.answer = (tagged.group(1) if tagged else text).strip()
            turn.thought = "" if not tagged else text[: tagged.start()].strip()
        return turn

    def format_turn(self, thought: str, calls: Sequence[ToolCall] = (), answer: str | None = None) -> dict[str, Any]:
        if answer is not None:
            return {"role": "assistant", "content": f"{thought}\n<answer>{answer}</answer>".strip()}
        tool_calls = [
            {
                "id": call.id or f"call_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for i, call in enumerate(calls)
        ]
        return {"role": "assistant", "content": thought, "tool_calls": tool_calls}

    def observation(
        self, results: Sequence[ToolResult], errors: Sequence[str] = (), final: bool = False
    ) -> list[Message]:
        messages: list[Message] = [
            {"role": "tool", "tool_call_id": call.id or f"call_{i}", "content": [text_part(outcome_text(r))]}
            for i, r in enumerate(results)
            for call in r.calls
        ]
        images = [r.outcome.index for r in results if isinstance(r.outcome, View)]
        follow_up = [text_part(f"error: {e}") for e in errors]
        if images:
            follow_up.append(text_part("Rendered views: " + ", ".join(f"view {i}" for i in images)))
            follow_up.extend(image_part(i) for i in images)
        if final:
            follow_up.append(text_part("No more tool calls are allowed: reply with your final answer now."))
        if follow_up:
            messages.append({"role": "user", "content": follow_up})
        return messages
