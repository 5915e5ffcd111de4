"""The models a visitor can pick, the modes each supports, and the cache of loaded policies.

Loaded policies are the only thing sessions share: weights load once per process. Each session gets
its own ``Agent`` (and the expert, which holds per-puzzle plans, its own ``ExpertPolicy``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from sketchmind.agent import MODES, Mode
from sketchmind.demo.limits import DemoInputError, one_line
from sketchmind.models.default import (
    DEFAULT_POLICY,
    ShippedPolicyMissing,
    is_shipped,
    resolve_model,
    shipped_policy,
)

if TYPE_CHECKING:
    from sketchmind.models.base import Policy

DEFAULT = "default"  # the shipped policy: its draw or latent variant, by mode
EXPERT = "expert"
EXPERT_LABEL = "expert (generated puzzles only)"
CUSTOM_HINT = "or type a checkpoint path / hub id, or openai:NAME (server from $OPENAI_BASE_URL)"

NOTE_TITLE = "ⓘ About this model"
SPECIALIST_NOTE = (
    f"**{DEFAULT_POLICY} is a grid-puzzle specialist.** It is a 5 M-parameter model trained only on generated "
    "frozen-lake maps, which it solves by a search written in words (its latent variant: on frozen lakes, mazes, "
    "line tracing and small targets), so on your own image its answer means little. For a general image, point "
    "the demo at a general vision-language model: type a local "
    "checkpoint folder or hub id (a Qwen2.5-VL or Qwen3-VL) in **Model**, or start the demo with "
    "`sketchmind demo --model /path/to/checkpoint`; or, for a model behind an OpenAI-compatible server, type "
    "`openai:NAME` and start the demo with `OPENAI_BASE_URL=http://HOST:PORT/v1` "
    "(`sketchmind serve --model CHECKPOINT` is one such server)."
)
EXPERT_NOTE = "**The expert only plays generated puzzles:** click *Generate*, or pick another model for this image."

_POLICIES: dict[str, Policy] = {}
_LOADING = threading.Lock()


def model_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for the model dropdown; the shipped policy only when this install has it."""
    choices = [(EXPERT_LABEL, EXPERT)]
    if shipped_policy("draw") is not None:
        choices.insert(0, (f"{DEFAULT_POLICY} (shipped default)", DEFAULT))
    return choices


def default_model_value() -> str:
    """The dropdown's initial value: the shipped policy if there is one, else the expert."""
    return DEFAULT if shipped_policy("draw") is not None else EXPERT


def is_default(model: str | None) -> bool:
    """Whether a dropdown value runs the shipped policy (its entry, its name, or its folder typed in)."""
    value = (model or "").strip()
    return bool(value) and (value in (DEFAULT, DEFAULT_POLICY) or is_shipped(value))


def upload_note(model: str | None) -> str:
    """What to know before running ``model`` on an uploaded image (not a generated puzzle); "" if nothing."""
    if is_default(model):
        return SPECIALIST_NOTE
    if (model or "").strip() == EXPERT:
        return EXPERT_NOTE
    return ""


def modes_for(model: str | None) -> list[Mode]:
    """The agent modes a model supports (others would only fail at load)."""
    if model == EXPERT:
        return ["draw", "text"]
    if model == DEFAULT:
        return list(MODES) if shipped_policy("latent") is not None else ["draw", "text"]
    return list(MODES)  # a custom model: the agent says which modes its policy supports


def policy_spec(model: str, mode: Mode) -> str:
    """The ``load_policy`` spec a dropdown value names (the shipped policy's folder for ``default`` or its name)."""
    try:
        return resolve_model(DEFAULT_POLICY if model == DEFAULT else model, mode)
    except ShippedPolicyMissing:
        raise DemoInputError(
            f"This install has no {DEFAULT_POLICY} policy for mode {mode!r}; pick another model."
        ) from None


def load_cached(spec: str) -> Policy:
    """The policy ``spec`` names, loaded once per process; ``DemoInputError`` (one line) if it cannot load."""
    from sketchmind.models.loading import load_policy

    with _LOADING:
        if spec not in _POLICIES:
            try:
                _POLICIES[spec] = load_policy(spec)
            except Exception as error:  # any loader failure (missing path, bad config, no server) is one line
                raise DemoInputError(f"Could not load model {spec!r}: {one_line(error)}") from None
        return _POLICIES[spec]
