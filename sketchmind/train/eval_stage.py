"""The eval stage: bench every held-out target of the recipe in every eval mode, each with its own policy.

Each (target, mode) pair runs ``bench.run_bench`` into ``eval/<target>-<mode>/`` with the checkpoint and agent
mode ``eval_policies.eval_policy`` names; the latent run also saves its mean latent per slot index there, for
the ``latent-mean`` ablation. The accuracies with their intervals go to ``eval/metrics.jsonl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sketchmind.files import write_atomic, write_jsonl_atomic
from sketchmind.train.eval_policies import MEANS_FILE, eval_latent_policy, eval_policy

if TYPE_CHECKING:
    from sketchmind.train.pipeline import Pipeline


def run_eval(pipeline: Pipeline) -> dict[str, Any]:
    """Bench the recipe's eval targets in each mode; return ``{"target/mode": row}`` (accuracy and n)."""
    from sketchmind.bench import BenchConfig, run_bench
    from sketchmind.bench.report import summarise

    spec = pipeline.recipe.eval
    assert spec is not None
    targets = [(family, spec.levels.get(family)) for family in spec.families]
    if spec.vsp is not None:
        targets.append(("vsp", None))
    results: dict[str, Any] = {}
    lines: list[dict[str, Any]] = []
    for target, levels in targets:
        for mode in spec.modes:
            model, agent_mode = eval_policy(pipeline, mode)
            config = BenchConfig(
                target=target,
                model=model,
                mode=agent_mode,
                levels=tuple(levels) if levels else None,
                n=None if target == "vsp" else spec.n,
                seed=spec.seed,
                data=spec.vsp if target == "vsp" else None,
                max_turns=spec.max_turns,
                max_new_tokens=spec.max_new_tokens,
                batch_size=spec.batch_size,
            )
            folder = pipeline.folder("eval") / f"{target}-{mode}"
            policy = eval_latent_policy(pipeline, mode, model, target)
            run = run_bench(config, folder, policy=policy)
            if mode == "latent" and policy is not None and (means := policy.latent_means()) is not None:
                from safetensors.torch import save

                write_atomic(folder / MEANS_FILE, save({"means": means.contiguous()}))
            overall = summarise(run.records)[-1]
            row = {"family": target, "mode": mode, "model": model, "n": overall.n, "accuracy": overall.accuracy}
            lines.append({**row, "low": overall.low, "high": overall.high, "context": overall.context})
            results[f"{target}/{mode}"] = row
    write_jsonl_atomic(pipeline.folder("eval") / "metrics.jsonl", lines)
    pipeline.report(" · ".join(f"{k}: {v['accuracy']:.0%} of {v['n']}" for k, v in results.items()))
    return results
