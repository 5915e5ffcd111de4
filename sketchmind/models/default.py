"""The policy that ships inside the package: what ``sketchmind solve`` runs when no ``--model`` is given.

``sketchmind-tiny`` is trained from scratch by ``make policy`` (``policies/sketchmind-tiny.yaml``) and
copied into ``policies/sketchmind-tiny/`` by ``python -m sketchmind.train.ship``: ``draw/`` is the policy the
draw and text modes run (v2 speaks the ``search`` protocol, recorded in its config), ``latent/`` the latent
variant (v1's, from ``policies/sketchmind-tiny-v1.yaml``; a latent checkpoint: ``latent.json`` beside the
weights). The ``policies/`` folder installs as the package ``sketchmind.policies`` (see ``setup.py``), so a
wheel install finds it as well as an editable one.

``--model sketchmind-tiny`` names it in ``solve``, ``bench``, ``serve`` and the demo: ``resolve_model`` turns the
name into the folder for the agent's mode, and ``load_policy`` names a policy loaded from that folder
``sketchmind-tiny`` (in traces and in ``serve``'s ``/v1/models``), never after its folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_POLICY = "sketchmind-tiny"
NOTICE = (
    f"{DEFAULT_POLICY}: a 5 M-parameter policy trained on frozen-lake maps only (VSP's style), which it solves by a "
    "search written in words; for other images pass --model (a Qwen2.5-VL / Qwen3-VL checkpoint, or openai:NAME)"
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


class ShippedPolicyMissing(FileNotFoundError):
    """``sketchmind-tiny`` was asked for and this install has none; the message is one line for the user."""


def resolve_model(spec: str, mode: str = "draw") -> str:
    """The checkpoint a ``--model`` string names: the shipped folder for ``sketchmind-tiny``, else ``spec``.

    Raises ``ShippedPolicyMissing`` when ``spec`` is the shipped policy's name and this install lacks it.
    """
    if spec != DEFAULT_POLICY:
        return spec
    folder = shipped_policy(mode)
    if folder is None:
        variant = " (latent variant)" if mode in ("latent", "auto") else ""
        raise ShippedPolicyMissing(
            f"this install has no {DEFAULT_POLICY} policy{variant} (run `make policy`): pass --model "
            "(a checkpoint path, openai:NAME, replay:DIR or expert)"
        )
    return str(folder)


def is_shipped(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` is a folder of the shipped policy (its draw or latent variant)."""
    try:
        path = Path(checkpoint).expanduser().resolve()
    except (OSError, RuntimeError):
        return False
    return any(folder is not None and folder.resolve() == path for folder in map(shipped_policy, ("draw", "latent")))
