"""A trajectory that answered, as one dataset row in TRL's VLM chat format (the columns of ``synth_storage.COLUMNS``).

The messages are exactly those ``HFPolicy`` hands the chat template at inference time (text parts and bare image
parts), and the images are the views they reference, in order, so SFT trains on the text the model later reads
and writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sketchmind.models.base import Conversation
from sketchmind.models.chat import template_messages, view_images
from sketchmind.protocols.base import Message
from sketchmind.train.synth_filters import rounds

if TYPE_CHECKING:
    from sketchmind.train.synth import Trajectory

CHAT_ROLES = frozenset({"system", "user", "assistant"})


def chat_messages(conversation: Conversation) -> tuple[list[Message], list[np.ndarray]]:
    """The messages as ``HFPolicy._render`` hands them to the chat template, and the images in that order.

    Only plain chat text and images can be stored (no tool messages or native tool calls): anything
    else is a ``ValueError``.
    """
    for message in conversation.messages:
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES or not isinstance(content, list) or set(message) - {"role", "content"}:
            raise ValueError(f"a {role!r} message with keys {sorted(message)} is not plain chat text and images")
    messages, _ = template_messages(conversation.messages)
    return messages, view_images(conversation.messages, conversation.images)


def to_row(trajectory: Trajectory, *, correct: bool) -> dict[str, Any]:
    """One dataset row (its keys are ``synth_storage.COLUMNS``) for a trajectory that answered."""
    trace, conversation, puzzle = trajectory.trace, trajectory.conversation, trajectory.puzzle
    if trace is None or conversation is None:
        raise ValueError(f"{puzzle.id}: only a trajectory that answered makes a row")
    messages, arrays = chat_messages(conversation)
    return {
        "id": puzzle.id,
        "family": puzzle.family,
        "level": puzzle.level,
        "protocol": trace.protocol,
        "question": puzzle.question,
        "reference": puzzle.answer,
        "answer": trace.answer or "",
        "correct": correct,
        "reflective": trajectory.reflective,
        "turns": len(trace.steps),
        "rounds": rounds(trace),
        "n_images": len(arrays),
        "messages": messages,
        "images": [_pil(array) for array in arrays],
    }


def _pil(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(array))
    return image if image.mode == "RGB" else image.convert("RGB")
