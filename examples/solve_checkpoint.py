"""Solve with any Qwen2.5-VL / Qwen3-VL checkpoint, local or from the hub, and read back the saved trace.

    python examples/solve_checkpoint.py --model runs/train/micro/sft/final IMAGE QUESTION --save runs/ckpt
    python examples/solve_checkpoint.py --model Qwen/Qwen2.5-VL-7B-Instruct maze.png "Find a safe path."
    python examples/solve_checkpoint.py --model AntResearchNLP/ViLaSR --protocol vilasr --max-turns 20 maze.png "..."

A hub id downloads once into the Hugging Face cache; with HF_HUB_OFFLINE=1 only local folders and cached models
load. ViLaSR's checkpoint needs `--protocol vilasr` (its own prompt, JSON blocks and drawing style). Exit codes
as `sketchmind solve`: 0 answered, 1 no answer, 2 bad input, 3 backend failure (e.g. a model that cannot load).
"""

from __future__ import annotations

import argparse
import sys

from sketchmind.images import ImageInputError, load_image
from sketchmind.protocols import PROTOCOLS


def main() -> int:
    parser = argparse.ArgumentParser(description="Solve with a local or hub checkpoint.")
    parser.add_argument("image")
    parser.add_argument("question")
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument(
        "--protocol", choices=list(PROTOCOLS), help="default: the one the checkpoint was trained on, else sketchmind"
    )
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--save", metavar="DIR", default="runs/solve_checkpoint", help="trace folder")
    args = parser.parse_args()
    try:
        image = load_image(args.image)  # a bad image fails here, before the model loads
    except ImageInputError as error:
        print(f"solve_checkpoint: {error}", file=sys.stderr)
        return 2
    from sketchmind.agent import Agent, Budgets
    from sketchmind.models.base import BackendError, Sampling
    from sketchmind.models.loading import load_policy

    try:
        policy = load_policy(args.model)  # HFPolicy: one KV cache per conversation, reused turn after turn
    except BackendError as error:
        print(f"solve_checkpoint: backend error: {error}", file=sys.stderr)
        return 3
    agent = Agent(
        policy, args.protocol, Budgets(max_turns=args.max_turns), sampling=Sampling(max_new_tokens=args.max_new_tokens)
    )
    trace = agent.solve(image, args.question, save=args.save)  # saved after every step, so a crash keeps it
    for step in trace.steps:
        calls = ", ".join(call["name"] for call in step.calls) or "no calls"
        print(f"[{step.index}] wrote {step.tokens_out} tokens in {step.seconds or 0:.2f} s -> {calls}")
    print(f"trace saved to {args.save} (view it with: sketchmind show {args.save})")
    if trace.status == "error":
        print(f"solve_checkpoint: backend error: {trace.error}", file=sys.stderr)
        return 3
    print(f"answer: {trace.answer}" if trace.answer is not None else f"no answer ({trace.error or trace.status})")
    return 0 if trace.answer is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
