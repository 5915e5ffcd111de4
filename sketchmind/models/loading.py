"""Turn a ``--model`` string into a policy.

- ``openai:NAME`` — any OpenAI-compatible server (vLLM, Ollama, ``sketchmind serve``); the URL comes from
  ``--base-url`` or ``OPENAI_BASE_URL``.
- ``replay:TRACE_DIR`` — replay the model outputs recorded in a saved trace.
- ``sketchmind-tiny`` — the shipped policy (its latent variant for ``mode`` latent or auto), named
  ``sketchmind-tiny`` wherever the policy's name shows (traces, ``serve``); so is its folder given as a path.
- anything else — a transformers checkpoint: a local directory, or a hub id when online; a directory
  with ``latent.json`` loads as a ``LatentPolicy`` (``--mode latent`` / ``auto``).
"""

from __future__ import annotations

from pathlib import Path

from sketchmind.models.base import Policy
from sketchmind.models.default import DEFAULT_POLICY, is_shipped, resolve_model


def load_policy(spec: str, *, base_url: str | None = None, device: str | None = None, mode: str = "draw") -> Policy:
    """The policy a ``--model`` string names (for an agent in ``mode``). Backends are imported only when chosen.

    Raises ``ShippedPolicyMissing`` (a ``FileNotFoundError``) for ``sketchmind-tiny`` on an install without it,
    ``BackendError`` when a checkpoint cannot be loaded.
    """
    checkpoint = resolve_model(spec, mode)
    policy = _load(checkpoint, base_url=base_url, device=device)
    if is_shipped(checkpoint):
        policy.name = DEFAULT_POLICY  # one name for the shipped policy, whichever way it was given
    return policy


def _load(spec: str, *, base_url: str | None, device: str | None) -> Policy:
    kind, _, rest = spec.partition(":")
    if kind == "openai" and rest:
        from sketchmind.models.openai import OpenAIPolicy

        return OpenAIPolicy(rest, base_url=base_url)
    if kind == "replay" and rest:
        from sketchmind.models.replay import ReplayPolicy

        return ReplayPolicy.from_trace(Path(rest))
    from sketchmind.latent.tokens import is_latent_checkpoint

    if is_latent_checkpoint(spec):  # a latent-trained policy: the same weights, plus imagined drawings
        from sketchmind.models.latent import LatentPolicy

        return LatentPolicy(spec, device=device)
    from sketchmind.models.hf import HFPolicy

    return HFPolicy(spec, device=device)
