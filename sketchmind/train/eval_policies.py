"""The checkpoint and agent mode each eval mode benchmarks, and the latent policies an eval builds itself.

The latent policy runs the ``latent`` and ``auto`` modes and the latent ablations (``latent-mean``,
``latent-noise``), the baselines ``text`` and ``direct``, the draw policy ``draw``, and DPO's policy ``dpo`` (in
draw mode: beside ``draw`` it is the DPO-against-GRPO comparison, both from the rejection-sampled policy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sketchmind.models.latent import LatentPolicy
    from sketchmind.train.pipeline import Pipeline

LATENT_MODES: tuple[str, ...] = ("latent", "auto", "latent-mean", "latent-noise")  # eval modes of the latent policy
ABLATIONS: tuple[str, ...] = ("latent-mean", "latent-noise")  # latent mode with the latents replaced
MEANS_FILE = "latent_means.safetensors"  # a latent run's mean latent per slot index, for latent-mean


def eval_latent_policy(pipeline: Pipeline, mode: str, model: str, target: str) -> LatentPolicy | None:
    """The latent policies an eval builds itself (None: the bench loads ``model`` as usual).

    ``latent`` gets a policy whose mean latent per slot index is saved after the run (the mean over
    this target's held-out puzzles); ``latent-mean`` feeds those means instead of the computed
    latents, ``latent-noise`` noise at the latents' norms: the issue's latent ablation, on accuracy.
    """
    from sketchmind.models.latent import LatentPolicy

    if mode == "latent":
        return LatentPolicy(model)
    if mode not in ABLATIONS:
        return None
    means = None
    if mode == "latent-mean":
        import torch
        from safetensors.torch import load_file

        from sketchmind.latent.tokens import read_spec

        saved = pipeline.folder("eval") / f"{target}-latent" / MEANS_FILE
        if saved.is_file():
            means = load_file(str(saved))["means"]
        else:  # the latent run never imagined: there is nothing to replace, and nothing will be
            spec = read_spec(model)
            means = torch.zeros(spec.k, spec.hidden_size)
            pipeline.report(f"eval {target}: the latent run opened no latent block, so latent-mean equals latent")
    ablation: Literal["mean", "noise"] = "mean" if mode == "latent-mean" else "noise"
    return LatentPolicy(model, ablation=ablation, slot_means=means)


def eval_policy(pipeline: Pipeline, mode: str) -> tuple[str, str]:
    """The checkpoint an eval ``mode`` benchmarks and the agent mode it runs in."""
    if mode in LATENT_MODES:
        latent = pipeline.latent_model()
        if latent is None:
            raise ValueError(f"eval mode {mode!r} needs the latent stages (stages.latent in the recipe)")
        return latent, "latent" if mode in ABLATIONS else mode
    if mode == "dpo":
        dpo = pipeline.dpo_model()
        if dpo is None:
            raise ValueError("eval mode 'dpo' needs the dpo stage (stages.dpo in the recipe)")
        return dpo, "draw"
    draw = pipeline.model_after(pipeline.previous("eval"))
    if mode == "direct":
        direct = pipeline.baseline_model("direct")
        if direct is None:
            raise ValueError("eval mode 'direct' needs the direct baseline (stages.baselines in the recipe)")
        return direct, "text"
    if mode == "text":
        return pipeline.baseline_model("text") or draw, "text"
    return draw, mode
