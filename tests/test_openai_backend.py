"""The OpenAI-compatible client backend and server, over real loopback HTTP (uvicorn in a thread, no mocks).

The served policies are real ones: ``ReplayPolicy`` (recorded turns), a recording wrapper around it,
and ``HFPolicy`` on a tiny offline checkpoint when that backend is present.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from fastapi import FastAPI, Request
from loopback import Recording, Served
from recorded import EXPERT, MAZE
from starlette.responses import JSONResponse, Response

from sketchmind.agent import Agent
from sketchmind.images import load_image
from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.models.openai import OpenAIPolicy, png_data_url, to_openai_messages
from sketchmind.models.replay import ReplayPolicy
from sketchmind.server import create_app
from sketchmind.trace import Trace

TOOLS_SCRIPT: list[str | dict[str, Any]] = [
    {
        "content": "Box the goal.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "box", "arguments": '{"bbox": [64, 0, 128, 64]}'}}
        ],
    },
    {"content": "Action plan: R,U,U,U"},
]


class Fixed(Policy):
    """A real policy with a fixed answer, token counts and log-probability."""

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        return Generation(text="fixed", tokens_in=11, tokens_out=2, logprob=-1.5)


@pytest.fixture
def served_replay() -> Iterator[tuple[Served, Recording]]:
    policy = Recording(ReplayPolicy(EXPERT))
    with Served(create_app(policy, "replay-model")) as served:
        yield served, policy


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    """POST raw bytes or JSON with the standard library; (status, JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text


# ---------------------------------------------------------------------- the server, from the official client


def test_official_client_lists_models_and_gets_a_completion(served_replay: tuple[Served, Recording]) -> None:
    served, policy = served_replay
    client = openai.OpenAI(base_url=served.url, api_key="EMPTY", max_retries=0)
    assert [m.id for m in client.models.list()] == ["replay-model"]
    completion = client.chat.completions.create(
        model="replay-model",
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_data_url(load_image(MAZE))}},
                    {"type": "text", "text": "Find a safe path."},
                ],
            },
        ],
        max_tokens=64,
    )
    assert completion.object == "chat.completion" and completion.model == "replay-model"
    assert completion.choices[0].message.content == EXPERT[0]
    assert completion.choices[0].finish_reason == "stop" and completion.usage is not None
    (conversation,) = policy.seen
    assert conversation.messages[1]["content"] == [
        {"type": "image", "view": 1},
        {"type": "text", "text": "Find a safe path."},
    ]
    assert np.array_equal(conversation.images[1], load_image(MAZE))  # PNG data URL round trip is lossless


def test_bad_requests_get_400_with_an_openai_error_body(served_replay: tuple[Served, Recording]) -> None:
    url = served_replay[0].url + "/chat/completions"
    user = {"role": "user", "content": "hi"}

    def image(u: str) -> dict[str, Any]:
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": u}}]}

    cases: list[tuple[Any, str]] = [
        ({"model": "replay-model"}, "'messages' must be a non-empty list"),
        ({"model": "replay-model", "messages": []}, "'messages' must be a non-empty list"),
        ({"model": "replay-model", "messages": [user], "stream": "yes"}, "'stream' must be a boolean"),
        ({"model": "replay-model", "messages": [image("https://example.com/a.png")]}, "image URLs are not fetched"),
        ({"model": "replay-model", "messages": [image("data:image/png;base64,@@@")]}, "not valid base64"),
        ({"model": "replay-model", "messages": [image("data:image/png;base64,aGVsbG8=")]}, "not an image"),
        ({"model": "replay-model", "messages": [{"role": "robot", "content": "hi"}]}, "unknown role 'robot'"),
        ({"model": "replay-model", "messages": [user], "temperature": 9}, "'temperature' must be a number"),
        (b"{not json", "not valid JSON"),
    ]
    for body, message in cases:
        status, answer = post(url, body)
        assert status == 400, (body, answer)
        assert answer["error"]["type"] == "invalid_request_error" and message in answer["error"]["message"], answer
        assert one_line(answer["error"]["message"])
    status, answer = post(url, {"model": "other", "messages": [user]})
    assert status == 404 and "not served here" in answer["error"]["message"]
    assert served_replay[1].seen == []  # no bad request reached the policy


def test_backend_errors_are_500_with_one_line(served_replay: tuple[Served, Recording]) -> None:
    with Served(create_app(ReplayPolicy([]), "empty")) as served:
        status, answer = post(
            served.url + "/chat/completions", {"model": "empty", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert status == 500 and answer["error"] == {
            "message": "replay has only 0 recorded turns",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        policy = OpenAIPolicy("empty", base_url=served.url, max_retries=1, backoff=0.01, timeout=20)
        conversation = Conversation("c", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        with pytest.raises(BackendError) as raised:
            policy.generate(conversation)
        assert str(raised.value) == f"{served.url} answered 500 (replay has only 0 recorded turns) after 1 retry"


def test_client_errors_are_not_retried(served_replay: tuple[Served, Recording]) -> None:
    url = served_replay[0].url
    policy = OpenAIPolicy("no-such-model", base_url=url, max_retries=3, backoff=0.01)
    with pytest.raises(BackendError) as raised:
        policy.generate(Conversation("c", [{"role": "user", "content": "hi"}]))
    served_by = "this server serves 'replay-model'"
    assert (
        str(raised.value) == f"{url} rejected the request (404: model 'no-such-model' is not served here ({served_by}))"
    )
    assert policy.requests_sent == 1


def test_a_server_that_is_not_openai_compatible_fails_clearly() -> None:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def web_page() -> Response:
        return Response("<html>hello</html>", media_type="text/html")

    conversation = Conversation("c", [{"role": "user", "content": "hi"}])
    with Served(app) as served, pytest.raises(BackendError, match=r"without choices \(is it an OpenAI-compatible"):
        OpenAIPolicy("m", base_url=served.url).generate(conversation)


# ---------------------------------------------------------------------- the agent, through OpenAIPolicy and the server


def test_agent_over_http_with_the_sketchmind_protocol(served_replay: tuple[Served, Recording]) -> None:
    served, recorded = served_replay
    policy = OpenAIPolicy("replay-model", base_url=served.url, api_key="EMPTY", timeout=30)
    trace = Agent(policy, "sketchmind").solve(MAZE, "Find a safe path.")
    assert trace.status == "answered" and trace.answer == "Action plan: R,U,U,U", trace.error
    assert [s.view_ids for s in trace.steps] == [[2, 3], [4], []]
    assert recorded.images_per_request == [1, 3, 4]  # every view shown so far, sent as a data URL
    assert policy.images_encoded == 4  # 8 image parts sent, each view encoded once
    assert all(np.array_equal(c.images[1], load_image(MAZE)) for c in recorded.seen)
    last = recorded.seen[-1]
    assert [m["role"] for m in last.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last.messages[2]["content"] == [{"type": "text", "text": EXPERT[0]}]
    assert all(c.images[2].shape == last.images[2].shape for c in recorded.seen[1:])


def test_agent_over_http_with_native_tool_calls() -> None:
    recorded = Recording(ReplayPolicy(TOOLS_SCRIPT))
    with Served(create_app(recorded, "tools-model")) as served:
        policy = OpenAIPolicy("tools-model", base_url=served.url, timeout=30)
        trace = Agent(policy, "openai-tools").solve(MAZE, "maze?")
    assert trace.status == "answered" and trace.answer == "Action plan: R,U,U,U", trace.error
    assert trace.steps[0].view_ids == [2] and trace.steps[0].calls[0]["id"] == "c1"
    first, second = recorded.seen
    assert first.tools is not None and "box" in {t["function"]["name"] for t in first.tools}
    assert recorded.images_per_request == [1, 2]
    assistant, tool, user = second.messages[2:]
    assert assistant["tool_calls"] == TOOLS_SCRIPT[0]["tool_calls"]  # type: ignore[index]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "c1"
    assert all(p["type"] == "text" for p in tool["content"])  # images never ride in tool messages
    assert user["role"] == "user" and {"type": "image", "view": 2} in user["content"]


def test_tool_message_images_move_to_a_user_message() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": [], "tool_calls": [{"id": "a", "name": "box", "arguments": {"bbox": [1]}}]},
        {
            "role": "tool",
            "tool_call_id": "a",
            "content": [{"type": "text", "text": "view 2"}, {"type": "image", "view": 2}],
        },
        {
            "role": "tool",
            "tool_call_id": "b",
            "content": [{"type": "image", "view": 3}, {"type": "text", "text": "v3"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ]
    out = to_openai_messages(messages, lambda view: f"data:{view}")
    assert out[0]["tool_calls"] == [
        {"id": "a", "type": "function", "function": {"name": "box", "arguments": '{"bbox": [1]}'}}
    ]
    assert out[1:3] == [
        {"role": "tool", "tool_call_id": "a", "content": "view 2"},
        {"role": "tool", "tool_call_id": "b", "content": "v3"},
    ]
    image = [{"type": "image_url", "image_url": {"url": f"data:{v}"}} for v in (2, 3)]
    assert out[3] == {"role": "user", "content": image} and out[4]["role"] == "assistant"
    # A user message right after the tool messages takes the images in front of its own parts.
    follow: list[dict[str, Any]] = [messages[1], {"role": "user", "content": [{"type": "text", "text": "see"}]}]
    assert to_openai_messages(follow, lambda view: f"data:{view}")[1] == {
        "role": "user",
        "content": [image[0], {"type": "text", "text": "see"}],
    }


def test_each_view_is_encoded_once_per_conversation_until_released(served_replay: tuple[Served, Recording]) -> None:
    policy = OpenAIPolicy("replay-model", base_url=served_replay[0].url)
    pixels = load_image(MAZE)
    user = {"role": "user", "content": [{"type": "image", "view": 1}, {"type": "text", "text": "?"}]}
    conversation = Conversation("run-1", [user], images={1: pixels})
    policy.generate(conversation)
    policy.generate(Conversation("run-1", [user, {"role": "assistant", "content": "x"}, user], images={1: pixels}))
    assert policy.images_encoded == 1
    policy.release("run-1")
    policy.generate(conversation)
    assert policy.images_encoded == 2


def test_generate_batch_keeps_order_and_bounds_concurrency() -> None:
    recorded = Recording(ReplayPolicy(["a", "b", "c", "d", "e"]), delay=0.05)
    with Served(create_app(recorded, "m", concurrency=8)) as served:
        policy = OpenAIPolicy("m", base_url=served.url, concurrency=2)
        conversations = [
            Conversation(f"c{k}", [{"role": "assistant", "content": "-"}] * k + [{"role": "user", "content": "?"}])
            for k in range(5)
        ]
        generations = policy.generate_batch(conversations)
    assert [g.text for g in generations] == ["a", "b", "c", "d", "e"]
    assert recorded.max_in_flight <= 2 and len(recorded.seen) == 5


def test_usage_and_logprobs_round_trip() -> None:
    with Served(create_app(Fixed(), "fixed")) as served:
        conversation = Conversation("c", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        plain = OpenAIPolicy("fixed", base_url=served.url).generate(conversation)
        scored = OpenAIPolicy("fixed", base_url=served.url, logprobs=True).generate(conversation)
    assert (plain.text, plain.tokens_in, plain.tokens_out, plain.logprob) == ("fixed", 11, 2, None)
    assert scored.logprob == -1.5 and scored.seconds > 0


# ---------------------------------------------------------------------- failures: unreachable, slow, flaky, dying


def test_unreachable_server_fails_with_one_line() -> None:
    with socket.socket() as reserved:  # bound, never listening: connections to it are refused
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}/v1"
        policy = OpenAIPolicy("m", base_url=url, timeout=10, max_retries=2, backoff=0.05)
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            policy.generate(Conversation("c", [{"role": "user", "content": "hi"}]))
    assert str(raised.value) == f"cannot reach {url} (connection refused) after 2 retries"
    assert policy.requests_sent == 3 and time.monotonic() - started < 30


def test_a_silent_server_times_out_within_the_budget() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        policy = OpenAIPolicy("m", base_url=url, timeout=1, max_retries=3)
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            policy.generate(Conversation("c", [{"role": "user", "content": "hi"}]))
    assert str(raised.value) == f"no answer from {url} within 1 s"
    assert time.monotonic() - started < 30


def test_dropped_connections_are_retried() -> None:
    accepted: list[int] = []
    done = threading.Event()

    def hang_up(listener: socket.socket) -> None:  # accepts, then closes without a word
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            connection.close()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.05)
        worker = threading.Thread(target=hang_up, args=(listener,), daemon=True)
        worker.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        policy = OpenAIPolicy("m", base_url=url, timeout=10, max_retries=1, backoff=0.01)
        try:
            with pytest.raises(BackendError) as raised:
                policy.generate(Conversation("c", [{"role": "user", "content": "hi"}]))
        finally:
            done.set()
            worker.join(timeout=5)
    message = str(raised.value)
    assert message.startswith(f"cannot reach {url} (") and message.endswith(") after 1 retry") and one_line(message)
    assert policy.requests_sent == 2 and len(accepted) == 2


def test_429_and_503_are_retried_until_the_server_answers() -> None:
    app: FastAPI = create_app(ReplayPolicy(["finally"]), "m")
    failures = [(503, {}), (429, {"retry-after-ms": "20"}), (503, {})]
    posts: list[int] = []

    @app.middleware("http")
    async def flaky(request: Request, call_next: Any) -> Response:
        if request.method == "POST":
            posts.append(1)
            if failures:
                status, headers = failures.pop(0)
                body = {"error": {"message": "overloaded", "type": "server_error"}}
                return JSONResponse(body, status_code=status, headers=headers)
        response: Response = await call_next(request)
        return response

    with Served(app) as served:
        policy = OpenAIPolicy("m", base_url=served.url, max_retries=3, backoff=0.02, timeout=30)
        generation = policy.generate(Conversation("c", [{"role": "user", "content": "hi"}]))
        assert generation.text == "finally" and len(posts) == 4 and policy.requests_sent == 4
        failures.extend([(503, {})] * 3)
        posts.clear()
        stubborn = OpenAIPolicy("m", base_url=served.url, max_retries=2, backoff=0.02, timeout=30)
        with pytest.raises(BackendError) as raised:
            stubborn.generate(Conversation("d", [{"role": "user", "content": "hi"}]))
    assert str(raised.value) == f"{served.url} answered 503 (overloaded) after 2 retries" and len(posts) == 3


def test_a_server_that_dies_mid_trace_ends_the_run_with_an_error(tmp_path: Path) -> None:
    served = Served(create_app(ReplayPolicy(EXPERT), "replay-model"))
    with served:
        policy = OpenAIPolicy("replay-model", base_url=served.url, timeout=10, max_retries=2, backoff=0.05)
        events = []
        for event in Agent(policy).stream(MAZE, "maze?", save=tmp_path / "run"):
            events.append(event)
            if event["node"] == "think" and len(events) == 1:
                served.stop()  # the first turn was answered; the second request finds nobody home
    assert [e["node"] for e in events][:4] == ["think", "act", "observe", "think"]
    assert events[-1]["status"] == "error"
    trace = Trace.load(tmp_path / "run")
    assert trace.status == "error" and len(trace.steps) == 1 and trace.steps[0].view_ids == [2, 3]
    assert trace.error == f"cannot reach {served.url} (connection refused) after 2 retries"
    assert policy.requests_sent == 1 + 3


# ---------------------------------------------------------------------- a real model behind the server


@pytest.mark.skipif(importlib.util.find_spec("sketchmind.models.hf") is None, reason="sketchmind.models.hf not written")
def test_hf_policy_behind_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from sketchmind.models.hf import HFPolicy
    from sketchmind.models.tiny import build_tiny

    hf = HFPolicy(str(build_tiny("qwen2.5-vl", tmp_path / "tiny")))
    with Served(create_app(hf, "tiny-qwen")) as served:
        policy = OpenAIPolicy("tiny-qwen", base_url=served.url, timeout=120)
        user = {
            "role": "user",
            "content": [{"type": "image", "view": 1}, {"type": "text", "text": "where is the goal?"}],
        }
        conversation = Conversation("hf", [user], images={1: load_image(MAZE)})
        generation = policy.generate(conversation, Sampling(max_new_tokens=4))
        assert isinstance(generation.text, str)
        assert generation.tokens_in is not None and generation.tokens_in > 0
        assert generation.tokens_out is not None and 0 < generation.tokens_out <= 4
        # The next turn resends everything; the server maps it to the first request's cache.
        conversation.messages += [
            {"role": "assistant", "content": [{"type": "text", "text": generation.text}]},
            {"role": "user", "content": [{"type": "text", "text": "and the player?"}]},
        ]
        second = policy.generate(conversation, Sampling(max_new_tokens=4))
        full = hf.count_tokens(Conversation("count", conversation.messages, conversation.images))
    assert second.tokens_in is not None and 0 < second.tokens_in < full // 4
