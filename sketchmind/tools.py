"""The drawing tools for other agents: JSON-schema specs and LangChain tools.

``specs()`` is what you pass as ``tools=`` to an OpenAI-compatible API, TRL or an MCP server;
``canvas.apply(name, arguments)`` executes a call. ``langchain_tools(canvas)`` wraps the same tools
for LangChain/LangGraph agents (``langchain-core`` is imported only when you call it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sketchmind.actions import ACTIONS, parameters_schema
from sketchmind.canvas import Canvas, View

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool


def specs(names: Iterable[str] | None = None, *, include_answer: bool = True) -> list[dict[str, Any]]:
    """OpenAI function-calling specs (``{"type": "function", "function": {...}}``) for the tools."""
    chosen = list(names) if names is not None else list(ACTIONS)
    unknown = [n for n in chosen if n not in ACTIONS]
    if unknown:
        raise ValueError(f"unknown tools {unknown}; available: {', '.join(ACTIONS)}")
    return [
        {
            "type": "function",
            "function": {"name": name, "description": ACTIONS[name].summary, "parameters": parameters_schema(name)},
        }
        for name in chosen
        if include_answer or name != "answer"
    ]


def langchain_tools(canvas: Canvas) -> list[BaseTool]:
    """The drawing tools bound to ``canvas`` as LangChain ``StructuredTool``s.

    Each tool returns ``(text, view)``: the text for the model, and the new ``View`` (or ``None`` on
    error) as the artifact, so a LangGraph agent can attach the image to its next message.
    """
    from langchain_core.tools import StructuredTool

    def bind(name: str) -> BaseTool:
        def run(**arguments: Any) -> tuple[str, View | None]:
            outcome = canvas.apply(name, {k: v for k, v in arguments.items() if v is not None})
            if isinstance(outcome, View):
                return outcome.describe(), outcome
            return f"error: {outcome}", None

        return StructuredTool.from_function(
            func=run,
            name=name,
            description=ACTIONS[name].summary,
            args_schema=parameters_schema(name),
            response_format="content_and_artifact",
        )

    return [bind(name) for name in ACTIONS if name != "answer"]
