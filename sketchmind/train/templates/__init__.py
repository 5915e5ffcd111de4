"""Chat templates and response templates that make a VLM tool-capable in TRL's sense.

TRL's GRPO tool loop needs two things from the processor: a chat template that renders ``tools``,
assistant ``tool_calls`` and ``tool`` messages (and is prefix-preserving), and a *response template* on the
tokenizer so ``parse_response`` can turn generated text back into ``{"content", "tool_calls"}``.

- Qwen3-VL's stock template already renders tools Hermes-style; Qwen2.5-VL's stock template does not, so
  ``prepare_processor`` installs ``QWEN2_5_VL_TOOL_TEMPLATE``. Our tiny models' template
  (``sketchmind.models.tiny``) renders them in the ``sketchmind`` protocol's own text (tool results as the
  agent's ``<observation>`` user turn, no tool list beside a system prompt), so GRPO rollouts read like the
  SFT data; it is left as it is.
- The response template is ours for every family: ``<tool_call>{json}</tool_call>`` blocks become
  ``tool_calls`` (the same calls our ``sketchmind`` protocol writes, so SFT data and GRPO rollouts agree),
  and everything else, ``<think>`` and ``<answer>`` included, stays verbatim in ``content`` (TRL's own
  Qwen3 template would move ``<think>`` into ``reasoning_content``). Calls whose JSON does not parse make
  TRL fall back to the plain decoded text, so a malformed call stays visible in ``content``.
"""

from __future__ import annotations

from typing import Any

from sketchmind.train.templates.qwen2_5_vl import QWEN2_5_VL_TOOL_TEMPLATE

FAMILIES = ("qwen2.5-vl", "qwen3-vl", "idefics3")
_MODEL_TYPES = {"qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl", "idefics3": "idefics3"}


def _hermes(start: str, end: str) -> dict[str, Any]:
    """A response template: text up to ``end`` is content, each ``<tool_call>`` JSON block one tool call."""
    return {
        "defaults": {"role": "assistant"},
        "start_anchor": start,
        "fields": {
            "tool_calls": {
                "open": "<tool_call>",
                "close_pattern": r"</tool_call>\s*",
                "repeats": True,
                "content": "json",
                "transform": {"type": "function", "function": "{content}"},
            },
            # repeats + join: the text before and after the calls is one content string (not just the last piece).
            "content": {"close_pattern": end, "content": "text", "repeats": True, "join": ""},
        },
    }


RESPONSE_TEMPLATES: dict[str, dict[str, Any]] = {
    "qwen2.5-vl": _hermes("<|im_start|>assistant\n", r"<\|im_end\|>\s*"),
    "qwen3-vl": _hermes("<|im_start|>assistant\n", r"<\|im_end\|>\s*"),
    "idefics3": _hermes("Assistant:", r"<end_of_utterance>\s*"),
}
"""The response template TRL's ``parse_response`` uses for each family."""

TOOL_TEMPLATES: dict[str, str] = {"qwen2.5-vl": QWEN2_5_VL_TOOL_TEMPLATE}
"""Families whose stock chat template cannot call tools, and the template we ship for them."""


def family_of(model_type: str) -> str:
    """Our family name (``qwen2.5-vl`` ...) for a transformers ``config.model_type`` (``qwen2_5_vl`` ...)."""
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"no tool templates for model type {model_type!r}; supported: {', '.join(_MODEL_TYPES)}")
    return _MODEL_TYPES[model_type]


def supports_tools(processor: Any) -> bool:
    """Whether ``processor``'s chat template renders a whole tool-calling exchange (TRL's own check)."""
    from trl.chat_template_utils import supports_tool_calling

    return bool(supports_tool_calling(processor))


def prepare_processor(processor: Any, family: str) -> Any:
    """Make ``processor`` tool-capable for TRL and return it (changed in place).

    Installs the shipped tool template when the current chat template cannot render tool calls (the stock
    Qwen2.5-VL one), then sets our response template on the tokenizer, replacing any other, so tool calls
    parse the way ``sketchmind.train.rewards`` reads them. Raises ``ValueError`` for a family we have no
    template for.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    tokenizer = getattr(processor, "tokenizer", processor)
    if not supports_tools(processor):
        if family not in TOOL_TEMPLATES:
            raise ValueError(f"the {family} chat template cannot render tool calls and we ship no replacement")
        processor.chat_template = TOOL_TEMPLATES[family]
        tokenizer.chat_template = TOOL_TEMPLATES[family]
    tokenizer.response_template = RESPONSE_TEMPLATES[family]
    return processor


__all__ = [
    "FAMILIES",
    "QWEN2_5_VL_TOOL_TEMPLATE",
    "RESPONSE_TEMPLATES",
    "TOOL_TEMPLATES",
    "family_of",
    "prepare_processor",
    "supports_tools",
]
