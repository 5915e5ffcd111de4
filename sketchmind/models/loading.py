"""Turn a ``--model`` string into a policy.

- ``openai:NAME`` — any OpenAI-compatible server (vLLM, Ollama, ``sketchmind serve``); the URL comes from
  ``--base-url`` or ``OPENAI_BASE_URL``.
- ``replay:TRACE_DIR`` — replay the model outputs recorded in a saved trace.
- anything else — a transformers checkpoint: a local directory, or a hub id when online; a directory
  with ``latent.json`` loads as a ``LatentPolicy`` (``--mode latent`` / ``auto``).
"""

from __future__ import annotations

from pathlib import Path

from sketchmind.models.base import Policy


def load_policy(spec: str, *, base_url: str | None = None, device: str | None = None) -> Policy:
    """The policy a ``--model`` string names. Backends are imported only when chosen."""
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
