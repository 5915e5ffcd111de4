"""Do the latents carry view information? Stage-1 grounding losses compared at micro scale.

Run with ``.venv/bin/python tools/latent_diagnostics.py`` (offline, CPU, a few minutes; not part of
``make bench`` or the tests). A tiny Qwen2.5-VL (``build_tiny`` defaults: hidden 64, 2 layers) is built in a
temporary directory; for each grounding term (``sketchmind.latent.losses``: the plain ``cosine`` of
Mirage, ``centered`` and the ``contrastive`` default) it trains latent stage 1 then stage 2 on
synth rows (maze + frozenlake, ``--n`` puzzles per level, ``--seed``) and runs the held-out diagnostics
(``sketchmind.train.latent_diagnostics``) on rows of ``--held-out-seed``, after each stage:

- cosine of the latents P(h_prev) to their own view's target vs another view's (raw and centered);
- retrieval: fraction of slots whose latent is closest to its own block's target among the blocks of its
  sequence (centered and raw), against chance (1 / blocks);
- after stage 2, the following-text CE increase when the latents are replaced by the per-slot mean
  (``mean``) or by noise.

``--stage2-grounding 0,0.5`` runs stage 2 once per weight λ from the same stage-1 checkpoint (stage 2's
loss = CE + λ x the grounding term on the chain's own latents, ``run_latent_stage``'s
``stage2_grounding_weight``), one stage-2 row per λ, with the stage-2 training CE (mean over the last pass
over the rows) next to the held-out numbers. It prints one Markdown table; ``--json PATH`` also writes the
numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sketchmind.latent.losses import GROUNDINGS
from sketchmind.models.tiny import build_tiny
from sketchmind.train.latent_diagnostics import latent_ablation, latent_cosine
from sketchmind.train.latent_stage import read_metrics, run_latent_stage
from sketchmind.train.synth import synthesize

FAMILIES = ("maze", "frozenlake")
K = 4


def stage2_train_ce(stage_dir: Path, n_rows: int) -> float:
    """Stage 2's training CE: the mean over its last ``n_rows`` steps (one pass over the rows)."""
    steps = read_metrics(stage_dir)[-n_rows:]
    return sum(s["ce"] for s in steps) / len(steps) if steps else float("nan")


def run(
    grounding: Any,
    tiny: Path,
    rows: list[dict[str, Any]],
    held: list[dict[str, Any]],
    out: Path,
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Stage 1 with one grounding term, then stage 2 once per λ from it, and the diagnostics after each."""
    s1 = run_latent_stage(
        tiny, rows, out / "stage1", stage=1, k=K, grounding=grounding, max_steps=options.stage1_steps,
        lr=options.lr, save_steps=10**9, resume=False, seed=options.seed, device="cpu",
    )  # fmt: skip
    cos1 = latent_cosine(s1["final_dir"], held)
    stage2 = []
    for weight in options.stage2_grounding:
        folder = out / f"stage2-{weight:g}"
        s2 = run_latent_stage(
            s1["final_dir"], rows, folder, stage=2, k=K, grounding=grounding, stage2_grounding_weight=weight,
            max_steps=options.stage2_steps, lr=options.lr, save_steps=10**9, resume=False, seed=options.seed,
            device="cpu",
        )  # fmt: skip
        stage2.append(
            {
                "weight": weight,
                "cosine": asdict(latent_cosine(s2["final_dir"], held)),
                "ablation": latent_ablation(s2["final_dir"], held, seed=options.seed),
                "train_ce": stage2_train_ce(folder, len(rows)),
            }
        )
    return {"grounding": grounding, "stage1": asdict(cos1), "stage2": stage2}


def table(results: Sequence[dict[str, Any]]) -> str:
    head = (
        "| Grounding | After | cos own / other | centered own / other | retrieval (centered / raw) "
        "| chance | ΔCE mean | ΔCE noise | CE train / held-out |"
    )
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def line(grounding: str, after: str, c: dict[str, Any], cells: tuple[str, str, str]) -> str:
        return (
            f"| {grounding} | {after} | {c['mean']:.3f} / {c['shuffled_mean']:.3f} "
            f"| {c['centered_mean']:.3f} / {c['centered_shuffled_mean']:.3f} "
            f"| {c['retrieval']:.2f} / {c['retrieval_raw']:.2f} | {c['chance']:.2f} | {' | '.join(cells)} |"
        )

    for r in results:
        lines.append(line(r["grounding"], "stage 1", r["stage1"], ("", "", "")))
        for s2 in r["stage2"]:
            ablation = s2["ablation"]
            cells = (
                f"{ablation['mean']['increase']:+.3f}",
                f"{ablation['noise']['increase']:+.3f}",
                f"{s2['train_ce']:.3f} / {ablation['model']['ce']:.3f}",
            )
            lines.append(line(r["grounding"], f"stage 2, λ={s2['weight']:g}", s2["cosine"], cells))
    return "\n".join(lines)


def weights(text: str) -> list[float]:
    """``"0,0.5"`` -> ``[0.0, 0.5]`` (stage 2's grounding weights, each >= 0)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from error
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"need one or more weights >= 0: {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Latent grounding losses compared by the held-out diagnostics.")
    parser.add_argument("--groundings", nargs="+", default=list(reversed(GROUNDINGS)), choices=GROUNDINGS)
    parser.add_argument("--n", type=int, default=4, help="puzzles per level and family")
    parser.add_argument("--seed", type=int, default=0, help="training puzzles (and torch) seed")
    parser.add_argument("--held-out-seed", type=int, default=1)
    parser.add_argument("--stage1-steps", type=int, default=120)
    parser.add_argument("--stage2-steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--stage2-grounding",
        type=weights,
        default=[0.0],
        metavar="W[,W...]",
        help="stage 2's grounding weights λ to compare (comma-separated; default 0: CE only)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    options = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()
    rows, _ = synthesize(list(FAMILIES), options.n, seed=options.seed)
    held, _ = synthesize(list(FAMILIES), options.n, seed=options.held_out_seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="sketchmind-latent-diag-") as root:
        tiny = build_tiny("qwen2.5-vl", Path(root) / "tiny")
        for grounding in options.groundings:
            results.append(run(grounding, tiny, rows, held, Path(root) / grounding, options))
            print(f"{grounding}: done at {time.perf_counter() - started:.0f}s", file=sys.stderr)
    print(
        f"Tiny Qwen2.5-VL (hidden 64, 2 layers), K={K}; {len(rows)} training rows ({'+'.join(FAMILIES)}, "
        f"n={options.n}/level, seed {options.seed}), {len(held)} held-out rows (seed {options.held_out_seed}); "
        f"stage 1 {options.stage1_steps} steps, stage 2 {options.stage2_steps} steps, lr {options.lr:g}; "
        f"stage-2 grounding weights {', '.join(f'{w:g}' for w in options.stage2_grounding)}\n"
    )
    print(table(results))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    print(f"\n{time.perf_counter() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
