"""The policy that ships inside the package: what ``sketchmind solve`` runs when no ``--model`` is given.

``sketchmind-tiny`` is trained from scratch by ``make policy`` (``policies/sketchmind-tiny.yaml``) and
copied into ``policies/sketchmind-tiny/`` by ``python -m sketchmind.train.ship``: ``draw/`` is the draw policy,
``latent/`` its latent variant (a latent checkpoint: ``latent.json`` beside the weights). The
``policies/`` folder installs as the package ``sketchmind.policies`` (see ``setup.py``), so a wheel
install finds it as well as an editable one.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_POLICY = "sketchmind-tiny"
NOTICE = (
    f"{DEFAULT_POLICY}: a 5 M-parameter policy trained on grid puzzles only (frozen lake, maze, line tracing, "
    "small targets); for other images pass --model (a Qwen2.5-VL / Qwen3-VL checkpoint, or openai:NAME)"
)


def shipped_policy(mode: str = "draw") -> Path | None:
    """The shipped checkpoint for an agent ``mode`` (``latent``/``auto``: the latent variant), or None
    when this install has none (a source tree before ``make policy``)."""
    variant = "latent" if mode in ("latent", "auto") else "draw"
    try:
        root = resources.files("sketchmind.policies")
    except ModuleNotFoundError:
        return None
    folder = Path(str(root)) / DEFAULT_POLICY / variant
    return folder if (folder / "config.json").is_file() else None
