"""The assistant message of a reply, in OpenAI's shape: text, or ``tool_calls`` when the policy called tools.

A backend with native function calling returns structured calls (``Generation.message``). A policy that
writes the Hermes/Qwen text format (``<think>``, ``<tool_call>{json}</tool_call>``, ``<answer>``; the
shipped policy does) returns tags in its text; when the request offers ``tools`` and the text calls some
of them, the calls are lifted into ``tool_calls`` (name and JSON arguments) and the content keeps only
the thought, so an agent built on the OpenAI SDK sees function calls, as vLLM's tool parsers give it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sketchmind.models.base import Generation, Sampling


def _offered(tools: Sequence[Mapping[str, Any]] | None) -> set[str]:
    names = set()
    for tool in tools or ():
        function = tool.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _openai_call(name: str, arguments: Any, call_id: Any = None) -> dict[str, Any]:
    return {
        "id": str(call_id or f"call_{uuid.uuid4().hex[:24]}"),
        "type": "function",
        "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
    }


def structured_calls(message: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A structured message's tool calls in OpenAI's shape (from OpenAI-shaped or ``{"name", "arguments"}`` dicts)."""
    out = []
    for call in (message or {}).get("tool_calls") or []:
        function = call.get("function") or call
        out.append(_openai_call(str(function.get("name", "")), function.get("arguments", {}), call.get("id")))
    return out


def text_calls(text: str, tools: Sequence[Mapping[str, Any]] | None) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) for a text turn: its calls to offered ``tools`` lifted out, or (text, [])."""
    offered = _offered(tools)
    if not offered or "<tool_call>" not in text.lower():
        return text, []
    from sketchmind.protocols import get_protocol

    parsed = get_protocol("sketchmind").parse(text)
    calls = [call for call in parsed.calls if call.name in offered]
    if not calls or parsed.answer is not None:  # an answer ends the turn: the text stays as written
        return text, []
    thought = parsed.thought.strip()
    return thought or None, [_openai_call(call.name, call.arguments, call.id) for call in calls]


def reply_message(
    generation: Generation, tools: Sequence[Mapping[str, Any]] | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """The reply's content and tool calls: structured calls first, else calls read from the text."""
    calls = structured_calls(generation.message)
    if calls:
        return generation.text or None, calls
    return text_calls(generation.text, tools)


def finish_reason(generation: Generation, calls: Sequence[Any], sampling: Sampling) -> str:
    """``tool_calls``, ``length`` (the token budget ran out) or ``stop``."""
    if calls:
        return "tool_calls"
    if generation.tokens_out is not None and generation.tokens_out >= sampling.max_new_tokens:
        return "length"
    return "stop"


def usage(generations: Sequence[Generation]) -> dict[str, int]:
    """Token counts: the prompt once (as the first completion prefilled it), every completion's tokens."""
    prompt = (generations[0].tokens_in or 0) if generations else 0
    completion = sum(g.tokens_out or 0 for g in generations)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_response(
    generations: Sequence[Generation],
    model_name: str,
    sampling: Sampling,
    logprobs: bool,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ChatCompletion JSON object with one choice per generation.

    With ``logprobs`` requested and known, the summed log-probability is reported as a single
    entry covering the whole text (the ``Policy`` interface keeps only the sum).
    """
    choices = []
    for index, generation in enumerate(generations):
        content, calls = reply_message(generation, tools)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        choice_logprobs = None
        if logprobs and generation.logprob is not None:
            entry = {"token": generation.text, "logprob": generation.logprob, "bytes": None, "top_logprobs": []}
            choice_logprobs = {"content": [entry]}
        finish = finish_reason(generation, calls, sampling)
        choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": choice_logprobs})
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": choices,
        "usage": usage(generations),
    }
