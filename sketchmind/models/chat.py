"""The one conversion from our neutral messages to what a chat template reads.

Inference (``HFPolicy``), SFT data (``train.synth``) and the SFT collator all go through here, so the
text a model is trained on is byte for byte the text it later reads at inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def template_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Messages as chat templates want them, and the number of images in each.

    Text parts become ``{"type": "text", "text": ...}``, image parts a bare ``{"type": "image"}`` (so
    a view index, or the ``"text": None`` that Arrow storage adds to image parts, never reaches the
    template), ``None`` content becomes ``""``. Other fields (``tool_calls`` ...) pass through unless
    ``None``. An unknown part type is a ``ValueError``.
    """
    converted: list[dict[str, Any]] = []
    counts: list[int] = []
    for message in messages:
        out = {k: v for k, v in message.items() if v is not None and k != "content"}
        content = message.get("content")
        count = 0
        if isinstance(content, list):
            parts: list[dict[str, Any]] = []
            for part in content:
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind == "text":
                    parts.append({"type": "text", "text": part.get("text") or ""})
                elif kind == "image":
                    parts.append({"type": "image"})
                    count += 1
                else:
                    raise ValueError(f"unsupported message part {part!r:.80}")
            out["content"] = parts
        else:
            out["content"] = "" if content is None else content
        converted.append(out)
        counts.append(count)
    return converted, counts


def view_images(messages: Sequence[Mapping[str, Any]], images: Mapping[int, np.ndarray]) -> list[np.ndarray]:
    """The views the messages show, in the order their image parts appear (one entry per part)."""
    shown: list[np.ndarray] = []
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, Mapping) and part.get("type") == "image":
                view = part.get("view")
                if not isinstance(view, int) or view not in images:
                    raise ValueError(f"message refers to view {view!r}, which is not in the conversation's images")
                shown.append(images[view])
    return shown
