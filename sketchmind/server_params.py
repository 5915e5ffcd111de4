"""Which chat-completions parameters ``sketchmind serve`` honours; any other is refused in one line.

OpenAI's API refuses what it does not know, and a server that silently ignores ``response_format`` or
``top_k`` returns something the client did not ask for. So every top-level key of a request must be
in ``HONOURED`` or, for a parameter that changes nothing at its neutral value, be sent with that value
(``NEUTRAL``: e.g. ``frequency_penalty: 0`` or ``response_format: {"type": "text"}``, as some clients send
by default). ``null`` counts as absent, as it does for OpenAI. ``tool_choice`` may be ``auto`` or ``none``;
``required`` and a named function would need constrained decoding, so they are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# What each honoured parameter does here (docs/serve.md lists the same).
HONOURED: dict[str, str] = {
    "model": "required; must name the served model",
    "messages": "system, developer, user, assistant and tool messages; images as data: URLs",
    "max_tokens": "tokens to generate (also max_completion_tokens), up to the server's limit",
    "max_completion_tokens": "as max_tokens",
    "temperature": "0 is greedy",
    "top_p": "nucleus sampling",
    "seed": "completion i samples with seed + i",
    "stop": "a string or a list of strings",
    "n": "completions to sample, up to the server's limit",
    "stream": "Server-Sent Events in the chat.completion.chunk shape",
    "stream_options": "include_usage: a last chunk with the usage",
    "tools": "the policy's drawing calls come back as tool_calls to these functions",
    "tool_choice": "auto or none",
    "parallel_tool_calls": "true only (the policy may call several tools in one turn)",
    "logprobs": "the summed log-probability of the completion, as one entry",
    "user": "accepted, not used",
}


def _zero(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value == 0


# Parameters accepted only at the value that leaves decoding unchanged.
NEUTRAL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "frequency_penalty": ("0", _zero),
    "presence_penalty": ("0", _zero),
    "top_logprobs": ("0", _zero),
    "logit_bias": ("{}", lambda v: v == {}),
    "response_format": ('{"type": "text"}', lambda v: v == {"type": "text"}),
    "store": ("false", lambda v: v is False),
    "modalities": ('["text"]', lambda v: v == ["text"]),
    "service_tier": ('"auto" or "default"', lambda v: v in ("auto", "default")),
    "metadata": ("{}", lambda v: v == {}),
}

STREAM_OPTIONS = ("include_usage", "include_obfuscation")  # obfuscation pads chunks; nothing to pad here


class ParameterError(ValueError):
    """A parameter this server does not honour, or one with a value it cannot honour; one line."""


@dataclass(frozen=True)
class Settings:
    """What the request asks of the reply itself (sampling settings are read elsewhere)."""

    n: int = 1
    stream: bool = False
    include_usage: bool = False


def check_parameters(body: Mapping[str, Any], max_n: int) -> Settings:
    """The reply settings of a request whose every parameter is honoured; ``ParameterError`` otherwise.

    ``model`` is not checked here beyond being required: the server compares it with what it serves.
    """
    if body.get("model") is None:
        raise ParameterError("you must provide a model parameter")
    for key, value in body.items():
        if value is None or key in HONOURED:
            continue
        if key in NEUTRAL:
            neutral, accepts = NEUTRAL[key]
            if not accepts(value):
                raise ParameterError(f"'{key}' is not supported by this server (only {neutral}, its default)")
            continue
        if key in ("functions", "function_call"):
            raise ParameterError(f"'{key}' is deprecated and not supported; use 'tools'")
        raise ParameterError(f"unsupported parameter '{key}' (this server honours: {', '.join(HONOURED)})")
    _check_tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False:
        raise ParameterError("'parallel_tool_calls': false is not supported (the policy may call several tools)")
    n = body.get("n")
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_n:
        raise ParameterError(f"'n' must be an integer from 1 to {max_n} (this server's limit)")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ParameterError("'stream' must be a boolean")
    return Settings(n=n, stream=bool(stream), include_usage=_include_usage(body.get("stream_options"), bool(stream)))


def _check_tool_choice(choice: Any) -> None:
    if choice is None or choice in ("auto", "none"):
        return
    if choice == "required" or isinstance(choice, Mapping):
        raise ParameterError(
            "'tool_choice' must be 'auto' or 'none': this server cannot force a tool call (no constrained decoding)"
        )
    raise ParameterError("'tool_choice' must be 'auto' or 'none'")


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise ParameterError("'stream_options' is only allowed with stream=true")
    if not isinstance(options, Mapping):
        raise ParameterError("'stream_options' must be an object")
    unknown = [key for key in options if key not in STREAM_OPTIONS]
    if unknown:
        raise ParameterError(f"unsupported stream option '{unknown[0]}' (use {', '.join(STREAM_OPTIONS)})")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise ParameterError("'stream_options.include_usage' must be a boolean")
    return bool(include)
