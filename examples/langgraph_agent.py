"""SketchMind's drawing tools inside your own LangGraph agent: a model node, a tool node, and a Canvas.

    python examples/langgraph_agent.py --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct \
        data/vsp-maze-examples/maps/level4/img/0.png "Box the goal, then say which row and column it is in."

The model is any OpenAI-compatible chat model with function calling (vLLM with --enable-auto-tool-choice, Ollama,
`sketchmind serve`), called with the plain `openai` SDK and `tools=specs(include_answer=False)`. The tool node runs
each call with `canvas.apply(name, arguments)` and answers with the new view's one-line description or the error;
the new views follow as images in a user message, since most servers reject images in tool messages. The loop ends
when the model replies without tool calls (its answer: exit 0) or after --max-turns model turns (exit 1).
"""

from __future__ import annotations

import argparse
import base64
import operator
import os
import sys
from typing import Annotated, Any, TypedDict

import openai
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from sketchmind import Canvas, ImageInputError, View
from sketchmind.tools import specs

SYSTEM = (
    "Answer the question about the image. You may draw on it with the tools first: view 1 is the input image, "
    "each drawing makes a new numbered view, and coordinates are pixels of the view you draw on."
)


class State(TypedDict):
    messages: Annotated[list[Any], operator.add]  # OpenAI chat messages as dicts; nodes return new ones to append
    turns: int


def image_part(view: View) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(view.png()).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def build_graph(
    client: openai.OpenAI, model: str, canvas: Canvas, max_turns: int, max_tokens: int
) -> CompiledStateGraph[State]:
    tools: list[Any] = specs(include_answer=False)  # no `answer` tool: a reply without tool calls is the answer

    def call_model(state: State) -> dict[str, Any]:
        reply = client.chat.completions.create(
            model=model, messages=state["messages"], tools=tools, max_tokens=max_tokens, temperature=0
        )
        message = reply.choices[0].message.model_dump(exclude_none=True)  # a plain dict, ready to send back
        print(f"[model {state['turns'] + 1}] {message.get('content') or ''}".rstrip())
        return {"messages": [message], "turns": state["turns"] + 1}

    def run_tools(state: State) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        views: list[View] = []
        for call in state["messages"][-1]["tool_calls"]:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            outcome = canvas.apply(name, arguments)  # never raises: a bad call comes back as a one-line error
            if isinstance(outcome, View):
                views.append(outcome)
            text = outcome.describe() if isinstance(outcome, View) else f"error: {outcome}"
            print(f"[tool] {name} {arguments} -> {text}")
            results.append({"role": "tool", "tool_call_id": call["id"], "content": text})
        if views:
            intro = {"type": "text", "text": "The views you drew, in order:"}
            results.append({"role": "user", "content": [intro, *map(image_part, views)]})
        return {"messages": results}

    def route(state: State) -> str:
        wants_tools = bool(state["messages"][-1].get("tool_calls"))
        return "tools" if wants_tools and state["turns"] < max_turns else END

    graph = StateGraph(State)
    graph.add_node("model", call_model)
    graph.add_node("tools", run_tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile()


def main() -> int:
    parser = argparse.ArgumentParser(description="Drawing tools inside a LangGraph agent of your own.")
    parser.add_argument("image")
    parser.add_argument("question")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's /v1 URL")
    parser.add_argument("--model", required=True, help="the model name the server knows")
    parser.add_argument("--max-turns", type=int, default=6, help="model turns at most")
    parser.add_argument("--max-tokens", type=int, default=512, help="tokens per model turn")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = parser.parse_args()
    try:
        canvas = Canvas(args.image)
    except ImageInputError as error:
        print(f"langgraph_agent: {error}", file=sys.stderr)
        return 2
    key = os.environ.get("OPENAI_API_KEY", "EMPTY")  # local servers accept any key
    client = openai.OpenAI(base_url=args.base_url, api_key=key, timeout=args.timeout, max_retries=1)
    graph = build_graph(client, args.model, canvas, args.max_turns, args.max_tokens)
    question = [{"type": "text", "text": args.question}, image_part(canvas.source)]
    start: State = {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "turns": 0,
    }
    try:
        final = graph.invoke(start, {"recursion_limit": 2 * args.max_turns + 2})
    except openai.APIConnectionError as error:
        print(f"langgraph_agent: cannot reach {args.base_url} ({error})", file=sys.stderr)
        return 3
    except openai.APIError as error:  # e.g. a 4xx/5xx answer: the server's message, on one line
        print(f"langgraph_agent: {args.base_url} failed: {' '.join(str(error).split())}", file=sys.stderr)
        return 3
    last = final["messages"][-1]
    if last.get("tool_calls"):
        print(f"no answer (turns: {final['turns']}, views drawn: {len(canvas) - 1}): the model was still drawing")
        return 1
    print(f"answer (turns: {final['turns']}, views drawn: {len(canvas) - 1}): {last.get('content', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
