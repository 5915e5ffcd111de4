"""What the demo accepts from a visitor: upload size, image pixels, question length; errors as one line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from sketchmind.images import ImageInputError, load_image

MAX_FILE_SIZE = "10mb"  # gradio's upload limit (``launch(max_file_size=...)``): bigger uploads are refused
DEFAULT_MAX_PIXELS = 16_000_000  # 4000 x 4000; SKETCHMIND_MAX_PIXELS overrides it
MAX_QUESTION_CHARS = 2000
MAX_LINE_CHARS = 300


class DemoInputError(ValueError):
    """A visitor's input the demo refuses; ``str(error)`` is one line for the page."""


def one_line(text: object, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` as a single line of at most ``limit`` characters (the first line of a long error)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def max_pixels() -> int:
    """The largest upload in pixels: ``SKETCHMIND_MAX_PIXELS`` if set, else 16 Mpx."""
    raw = os.environ.get("SKETCHMIND_MAX_PIXELS", "")
    return int(raw) if raw.isdigit() else DEFAULT_MAX_PIXELS


def read_upload(payload: Mapping[str, Any] | str | None) -> np.ndarray | None:
    """The RGB pixels of an uploaded image (gradio's file payload or a path), ``None`` when there is none.

    Raises ``DemoInputError`` (one line, without the server's file path) for files that are not images,
    are corrupt, or have more pixels than ``max_pixels()``.
    """
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, Mapping) else payload
    if not path:
        return None
    name = str(payload.get("orig_name") or "the upload") if isinstance(payload, Mapping) else "the upload"
    try:
        return load_image(str(path), max_pixels=max_pixels())
    except ImageInputError as error:
        # load_image names the file by its server path; the visitor knows it by its own name.
        message = str(error).replace(str(path), name, 1)
        raise DemoInputError(one_line(message)) from None


def check_question(question: str | None) -> str:
    """The question, stripped; ``DemoInputError`` if it is empty or too long."""
    text = (question or "").strip()
    if not text:
        raise DemoInputError("Type a question first (generating a puzzle fills in its own question).")
    if len(text) > MAX_QUESTION_CHARS:
        raise DemoInputError(f"The question has {len(text)} characters; the limit is {MAX_QUESTION_CHARS}.")
    return text
