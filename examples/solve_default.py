"""Solve a question about an image with the policy that ships inside SketchMind, printing each step as it streams.

    python examples/solve_default.py [IMAGE] [QUESTION] [--save runs/solve_default]

With no arguments it solves the 3x3 VSP map data/vsp-maze-examples/maps/level3/img/0.png, asked the way the
default policy was trained (frozen-lake puzzles). Exit codes as `sketchmind solve`: 0 answered, 1 no answer,
2 bad input (or no shipped policy in this install), 3 backend failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sketchmind.images import ImageInputError, load_image
from sketchmind.models.default import DEFAULT_POLICY, NOTICE, shipped_policy
from sketchmind.tasks.frozenlake import question_text

MAP = Path(__file__).resolve().parents[1] / "data" / "vsp-maze-examples" / "maps" / "level3" / "img" / "0.png"


def show(event: dict[str, Any]) -> None:
    """One streamed graph step: the model's thought and calls after `think`, the views drawn after `act`."""
    step = event.get("step") or {}
    if event["node"] == "think" and event["status"] != "error":
        print(f"[{step['index']}] {step['thought'].strip()}")
        for call in step["calls"]:
            print(f"    call {call['name']} {json.dumps(call['arguments'])}")
    elif event["node"] == "act":
        print(f"    drew views {step['view_ids']}" + "".join(f"\n    error: {e}" for e in step["errors"]))


def main() -> int:
    parser = argparse.ArgumentParser(description="Solve with the shipped default policy.")
    parser.add_argument("image", nargs="?", default=str(MAP), help="input image (default: a 3x3 VSP map)")
    parser.add_argument("question", nargs="?", default=question_text("classic", 3, 3))
    parser.add_argument("--save", metavar="DIR", help="write trace.json and views/*.png here")
    parser.add_argument("--max-turns", type=int, default=10)
    args = parser.parse_args()

    try:
        image = load_image(args.image)  # a bad image fails here, before the model loads
    except ImageInputError as error:
        print(f"solve_default: {error}", file=sys.stderr)
        return 2
    folder = shipped_policy("draw")
    if folder is None:  # a source tree whose default policy has not been trained and shipped yet
        print(
            f"solve_default: this install has no {DEFAULT_POLICY} policy yet (`make policy` trains it); "
            "use examples/solve_checkpoint.py --model PATH",
            file=sys.stderr,
        )
        return 2
    # Torch and the agent load only once the inputs are known to be good.
    from sketchmind.agent import Agent, Budgets
    from sketchmind.models.base import BackendError
    from sketchmind.models.loading import load_policy

    print(NOTICE)
    try:
        # no protocol named: the agent speaks the one the shipped policy was trained on (its config says)
        agent = Agent(load_policy(str(folder)), None, Budgets(max_turns=args.max_turns), mode="draw")
        for event in agent.stream(image, args.question, save=args.save):
            show(event)
    except BackendError as error:  # the checkpoint could not be loaded
        print(f"solve_default: backend error: {error}", file=sys.stderr)
        return 3
    trace = event["trace"]  # the last event, "end", carries the finished trace
    if trace.status == "error":  # the model failed mid-run; the trace up to there is kept
        print(f"solve_default: backend error: {trace.error}", file=sys.stderr)
        return 3
    print(f"answer: {trace.answer}" if trace.answer is not None else f"no answer ({trace.error or trace.status})")
    return 0 if trace.answer is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
