"""The drawing tools as Python callables whose signature and docstring say what ``tools.specs()`` says.

Some frameworks take a tool as a function and build its JSON schema from the signature, the type hints
and a Google-style docstring (TRL's ``environment_factory`` methods, through
``transformers.utils.get_json_schema``). ``tool_function`` dresses any keyword-argument callable as one
drawing tool, with every piece taken from the pydantic action (``sketchmind.actions``): the name, the
summary, the argument names, their types, which are required, and each argument's description. So a
schema built from the callable cannot drift from the one ``specs()`` and the MCP server give.

The signature is for the schema only: the callable still receives exactly the keyword arguments the
model wrote, so a wrong or missing argument reaches the canvas and gets its own error line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from sketchmind.actions import ACTIONS, parameters_schema

F = TypeVar("F", bound=Callable[..., Any])


def argument_order(name: str) -> list[str]:
    """Tool ``name``'s argument names: required first, then the action's own before inherited ones
    (``box``: ``bbox``, ``label``, ``view``), as a person would list them."""
    action = ACTIONS[name]
    fields = action.model_fields
    declared: list[str] = []
    for klass in action.__mro__:  # most derived first
        for field in vars(klass).get("__annotations__", {}):
            if field in fields and field not in declared:
                declared.append(field)
    return sorted(declared, key=lambda field: not fields[field].is_required())  # stable: keeps the order above


def docstring(name: str) -> str:
    """Tool ``name``'s Google-style docstring: the summary, then one ``Args:`` line per argument."""
    properties = parameters_schema(name)["properties"]
    lines = [ACTIONS[name].summary, "", "Args:"]
    # One line each: the docstring parser ends an argument's description at the next "word:" line.
    lines += [f"    {field}: {' '.join(properties[field]['description'].split())}" for field in argument_order(name)]
    return "\n".join(lines) + "\n"


def signature(name: str, *, receiver: bool = False) -> inspect.Signature:
    """Tool ``name``'s keyword-only signature with the action's types and defaults, led by an unannotated
    ``self`` when ``receiver`` (a method; schema builders skip it)."""
    fields = ACTIONS[name].model_fields
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)] if receiver else []
    for field in argument_order(name):
        info = fields[field]
        default = inspect.Parameter.empty if info.is_required() else info.default
        parameters.append(
            inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=info.annotation)
        )
    return inspect.Signature(parameters)


def tool_function(name: str, function: F, *, receiver: bool = False) -> F:
    """``function`` renamed to tool ``name`` and given its signature, type hints and docstring.

    Args:
        name: A drawing tool (a key of ``sketchmind.actions.ACTIONS``).
        function: Any callable taking the tool's arguments as keywords (after ``self`` if ``receiver``).
        receiver: Whether ``function`` becomes a method (its first parameter is ``self``).
    """
    if name not in ACTIONS:
        raise ValueError(f"unknown tool {name!r}; available: {', '.join(ACTIONS)}")
    shape = signature(name, receiver=receiver)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = docstring(name)
    function.__annotations__ = {p.name: p.annotation for p in shape.parameters.values() if p.name != "self"}
    setattr(function, "__signature__", shape)  # noqa: B010 - inspect.signature reads it; mypy does not know it
    return function
