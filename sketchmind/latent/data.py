"""Latent trajectories from synth rows: every rendered view becomes a block of K latent slots.

A synth row alternates assistant turns (thought + tool calls) and user observations (text + the new
views). Its latent row is ``system`` + the first ``user`` message (the question and input image) + ONE
assistant message holding the whole trajectory: each turn's text, then, in place of the observation that
followed it, one latent block per view that observation showed::

    <think>..</think><tool_call>{..}</tool_call><tool_call>{..}</tool_call>
    <|latent_start|><|latent_pad|>x K<|latent_end|><|latent_start|>..<|latent_end|><think>..</think>
    ..<answer>..</answer>

Blocks follow all of a turn's calls (not each call) because that is where the views arrived: the second
call was written without seeing the first's view. The observation's text (``view 3: box ...``) is dropped;
the views themselves are kept as ``latent_images`` (in block order), the sources of the stage-1 targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sketchmind.latent.tokens import LATENT_END, LATENT_PAD, LATENT_START


def latent_block(k: int) -> str:
    """One block's text: ``<|latent_start|>``, ``k`` pads, ``<|latent_end|>``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return LATENT_START + LATENT_PAD * k + LATENT_END


def _parts(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content or [])


def _text(message: Mapping[str, Any]) -> str:
    return "".join(part.get("text") or "" for part in _parts(message) if part.get("type") == "text")


def _n_images(message: Mapping[str, Any]) -> int:
    return sum(1 for part in _parts(message) if part.get("type") == "image")


def latent_row(row: Mapping[str, Any], k: int = 4) -> dict[str, Any]:
    """The latent row of one synth row: ``messages``, ``images`` (the input image(s)), ``latent_images``.

    Other columns (``id``, ``answer`` ...) are copied. ``ValueError`` when the row does not start with
    [system,] user, assistant, or an observation shows no view (then there is nothing to imagine).
    """
    messages = list(row["messages"])
    images = list(row.get("images") or [])
    head = 1 if messages and messages[0].get("role") == "system" else 0
    if len(messages) < head + 2 or messages[head].get("role") != "user":
        raise ValueError("a synth row starts with [system,] user, then the assistant")
    n_prompt_images = sum(_n_images(m) for m in messages[: head + 1])
    cursor = n_prompt_images  # index in ``images`` of the next view an observation shows
    pieces: list[str] = []
    latent_images: list[Any] = []
    for message in messages[head + 1 :]:
        role = message.get("role")
        if role == "assistant":
            pieces.append(_text(message))
        elif role in ("user", "tool"):
            n = _n_images(message)
            if n == 0:
                raise ValueError(f"an observation without a view cannot become a latent block: {_text(message)!r:.80}")
            pieces.append(latent_block(k) * n)
            latent_images.extend(images[cursor : cursor + n])
            cursor += n
        else:
            raise ValueError(f"unexpected role {role!r} after the prompt")
    if len(latent_images) != cursor - n_prompt_images or cursor > len(images):
        raise ValueError(f"the messages show {cursor} images but the row has {len(images)}")
    assistant = {"role": "assistant", "content": [{"type": "text", "text": "".join(pieces)}]}
    out = {key: value for key, value in row.items() if key not in ("messages", "images")}
    out.update(
        messages=[*messages[: head + 1], assistant],
        images=images[:n_prompt_images],
        latent_images=latent_images,
    )
    return out


def latent_rows(rows: Iterable[Mapping[str, Any]], k: int = 4) -> list[dict[str, Any]]:
    """``latent_row`` of every row, in order."""
    return [latent_row(row, k) for row in rows]


def n_blocks(rows: Sequence[Mapping[str, Any]]) -> int:
    """How many latent blocks (= target images) ``rows`` hold together."""
    return sum(len(row["latent_images"]) for row in rows)
