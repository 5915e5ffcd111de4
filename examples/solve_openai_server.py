"""Solve through any OpenAI-compatible server: vLLM, Ollama, or `sketchmind serve` on a checkpoint of your own.

Start a server, then point the example at it:

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --limit-mm-per-prompt '{"image": 45}'    # http://localhost:8000/v1
    ollama serve   # then, in another shell: ollama pull qwen2.5vl:7b                # http://localhost:11434/v1
    sketchmind serve --model runs/train/micro/sft/final --name micro --port 8000     # http://127.0.0.1:8000/v1

    python examples/solve_openai_server.py --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct \
        data/vsp-maze-examples/maps/level4/img/0.png "Find a safe path to the goal."

The agent loop runs here; the server only writes each turn. Images travel as PNG data URLs, so the server needs no
access to your files. Exit codes as `sketchmind solve`: 0 answered, 1 no answer, 2 bad input, 3 server failure.
"""

from __future__ import annotations

import argparse
import sys

from sketchmind.agent import Agent, Budgets
from sketchmind.images import ImageInputError, load_image
from sketchmind.models.base import Sampling
from sketchmind.models.openai import OpenAIPolicy


def main() -> int:
    parser = argparse.ArgumentParser(description="Solve through an OpenAI-compatible server.")
    parser.add_argument("image")
    parser.add_argument("question")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's /v1 URL")
    parser.add_argument("--model", required=True, help="the model name the server knows")
    # sketchmind: tags in plain text (any chat model); openai-tools: the server's native function calling.
    parser.add_argument("--protocol", default="sketchmind", choices=["sketchmind", "openai-tools"])
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model turn, retries included")
    parser.add_argument("--save", metavar="DIR", help="write trace.json and views/*.png here")
    args = parser.parse_args()
    try:
        image = load_image(args.image)
    except ImageInputError as error:
        print(f"solve_openai_server: {error}", file=sys.stderr)
        return 2
    # The policy retries refused connections, timeouts, 429 and 5xx within --timeout, then fails in one line.
    policy = OpenAIPolicy(args.model, base_url=args.base_url, timeout=args.timeout)
    budgets = Budgets(max_turns=args.max_turns, timeout=args.timeout)
    agent = Agent(policy, args.protocol, budgets, sampling=Sampling(max_new_tokens=args.max_new_tokens))
    trace = agent.solve(image, args.question, save=args.save)
    for step in trace.steps:
        calls = ", ".join(call["name"] for call in step.calls) or "no calls"
        print(f"[{step.index}] {step.tokens_in} tokens in, {step.tokens_out} out -> {calls}, views {step.view_ids}")
    if trace.status == "error":  # a backend failure ends the run as a trace, not an exception
        print(f"solve_openai_server: backend error: {trace.error}", file=sys.stderr)
        return 3
    print(f"answer: {trace.answer}" if trace.answer is not None else f"no answer ({trace.error or trace.status})")
    return 0 if trace.answer is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
