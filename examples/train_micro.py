"""Train a policy at micro scale with the pipeline that trains the shipped one, then solve a held-out maze with it.

    python examples/train_micro.py runs/micro-example          # synth, base, perceive, sft: a minute on 2 cores
    python examples/train_micro.py runs/micro-example --all    # every stage of policies/micro.yaml: a few minutes

Runs policies/micro.yaml (synthesized expert drawings -> a tiny Qwen2.5-VL built from scratch -> SFT ...) with its
output redirected to OUT_DIR. Re-runs skip finished stages and resume trainers. The trained draw policy then solves
one maze from the eval seed, which no stage trains on; a 12-step SFT is rarely right, the point is the loop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sketchmind.train.pipeline import STAGES, Pipeline
from sketchmind.train.recipe import load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "policies" / "micro.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description="Train at micro scale, then solve a held-out puzzle.")
    parser.add_argument("out_dir", type=Path, help="where every stage writes (re-runs resume)")
    parser.add_argument(
        "--stages", default="synth,base,perceive,sft", help=f"comma-separated, in order: {', '.join(STAGES)}"
    )
    parser.add_argument("--all", action="store_true", help="every stage: rejection, GRPO, latent, baselines, eval")
    args = parser.parse_args()
    stages = None if args.all else [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages or []) - set(STAGES))
    if unknown:
        print(f"train_micro: unknown stages {', '.join(unknown)}; use some of {', '.join(STAGES)}", file=sys.stderr)
        return 2
    recipe = load_recipe(RECIPE).model_copy(update={"output": str(args.out_dir)})
    pipeline = Pipeline(recipe)  # one line per stage; trainers show progress bars
    try:
        pipeline.run(stages)
    except (OSError, ValueError) as error:  # a stage whose input an earlier stage has not written yet
        print(f"train_micro: {error} (each stage needs the ones before it)", file=sys.stderr)
        return 2
    checkpoint = pipeline.latest_model()
    if not (Path(checkpoint) / "config.json").is_file():
        print(
            f"train_micro: no trained model yet at {checkpoint}; run the base, perceive and sft stages", file=sys.stderr
        )
        return 2
    print(f"trained draw policy: {checkpoint}")

    from sketchmind.agent import Agent, Budgets
    from sketchmind.models.base import Sampling
    from sketchmind.models.loading import load_policy
    from sketchmind.tasks import get_family, make_dataset

    held_out = recipe.eval
    assert held_out is not None  # micro.yaml has an eval section: its seed, turn and token budgets
    family = get_family("maze")
    puzzle = make_dataset(family, [1], 1, seed=held_out.seed)[0]
    sampling = Sampling(max_new_tokens=held_out.max_new_tokens)
    # The checkpoint's config says it writes 0-1000 coordinates; the "sketchmind" protocol follows it.
    agent = Agent(load_policy(checkpoint), "sketchmind", Budgets(max_turns=held_out.max_turns), sampling=sampling)
    trace = agent.solve(puzzle.image, puzzle.question, save=args.out_dir / "solve")
    verdict = "right" if family.verify(puzzle, trace.answer) else "wrong"
    said = repr(trace.answer) if trace.answer is not None else "no answer"
    print(f"{puzzle.id}: {said} after {len(trace.steps)} turns is {verdict} (a right one: {puzzle.answer!r})")
    print(f"trace saved to {args.out_dir / 'solve'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
