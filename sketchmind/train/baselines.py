"""The no-drawing baselines' training rows, made from the very trajectories the draw policy learns from.

A fair comparison of "reason by drawing" against "reason in words" and "just answer" keeps the puzzles,
the base model and the training settings the same and changes only what the model is taught to write:

- ``text``: chain of thought. The expert's thoughts, in order, as one ``<think>`` block, then its answer;
  no tool calls, no views. The expert narrates every step it draws ("from row 6, column 5, go left 1 cell
  ..."), so the words carry the same plan the drawing does.
- ``direct``: the answer alone.

Both rows use the agent's text-mode system prompt, which is what the model sees when it runs in
``--mode text``, and keep only the input image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from sketchmind.agent import TEXT_PROMPT

Baseline = Literal["text", "direct"]
BASELINES: tuple[Baseline, ...] = ("text", "direct")

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _text(message: Mapping[str, Any]) -> str:
    return "".join(part.get("text") or "" for part in message["content"] if part.get("type") == "text")


def baseline_row(row: Mapping[str, Any], kind: Baseline) -> dict[str, Any]:
    """``row`` (a synth row: system, question with the image, then the expert's turns) as a ``kind`` row.

    The row's other keys (id, family, level, answer, ...) are kept; ``turns``, ``rounds`` and ``n_images``
    describe the new row. Raises ``ValueError`` for a row whose
    last assistant turn has no answer (synth never keeps one).
    """
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; use one of {', '.join(BASELINES)}")
    messages = list(row["messages"])
    head = 2 if messages[0].get("role") == "system" else 1
    said = [_text(m) for m in messages[head:] if m.get("role") == "assistant"]
    answers = _ANSWER.findall(said[-1]) if said else []
    if not answers:
        raise ValueError(f"row {row.get('id', '?')}: the last assistant turn gives no <answer>")
    answer = f"<answer>{answers[-1].strip()}</answer>"
    if kind == "text":
        thoughts = " ".join(t.strip() for turn in said for t in _THINK.findall(turn) if t.strip())
        answer = f"<think>{thoughts}</think>{answer}"
    prompt_images = sum(1 for m in messages[:head] for p in m["content"] if p.get("type") == "image")
    system = {"role": "system", "content": [{"type": "text", "text": TEXT_PROMPT}]}
    question = messages[head - 1]
    assistant = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    shape = {"turns": 1, "rounds": 0, "n_images": prompt_images}  # synth's bookkeeping, now for one tool-free turn
    return {
        **row,
        **{k: v for k, v in shape.items() if k in row},
        "messages": [system, question, assistant],
        "images": list(row["images"])[:prompt_images],
    }
