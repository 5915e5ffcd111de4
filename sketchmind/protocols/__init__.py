"""Prompt formats: one file per protocol, each a system prompt, a parser and an observation formatter."""

from __future__ import annotations

from sketchmind.coords import Convention
from sketchmind.protocols.base import Message, ParsedTurn, Protocol, ToolCall, ToolResult
from sketchmind.protocols.openai_tools import OpenAIToolsProtocol
from sketchmind.protocols.search import SearchProtocol
from sketchmind.protocols.sketchmind import SketchMindProtocol
from sketchmind.protocols.vilasr import ViLaSRProtocol

DEFAULT_PROTOCOL = "sketchmind"  # spoken when neither the caller nor the policy names a protocol

PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls for cls in (SketchMindProtocol, ViLaSRProtocol, OpenAIToolsProtocol, SearchProtocol)
}


def get_protocol(name: str, convention: str | Convention | None = None) -> Protocol:
    """A protocol by name (``sketchmind``, ``vilasr``, ``openai-tools``, ``search``)."""
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}") from None
    return cls(convention)


__all__ = [
    "DEFAULT_PROTOCOL",
    "PROTOCOLS",
    "Message",
    "OpenAIToolsProtocol",
    "ParsedTurn",
    "Protocol",
    "SearchProtocol",
    "SketchMindProtocol",
    "ToolCall",
    "ToolResult",
    "ViLaSRProtocol",
    "get_protocol",
]
