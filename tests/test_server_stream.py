"""``stream=true`` through the official ``openai`` client, sync and async, against the real server on loopback.

A real tiny HF model streams token by token and its streamed text equals the non-streamed one; a
``ReplayPolicy`` gives fixed text for the shape checks: role first, content deltas, a finish reason, the
usage chunk with ``include_usage``, ``tool_calls`` deltas when tools are offered, ``[DONE]`` last.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from loopback import Served
from recorded import EXPERT

from sketchmind.models.replay import ReplayPolicy
from sketchmind.server import create_app
from sketchmind.server_stream import safe_prefix
from sketchmind.tools import specs

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Callable[[str], Path]) -> Iterator[str]:
    from sketchmind.models.hf import HFPolicy

    with Served(create_app(HFPolicy(str(tiny_checkpoint("qwen2.5-vl"))), "tiny")) as served:
        yield served.url


@pytest.fixture(scope="module")
def replay() -> Iterator[Served]:
    with Served(create_app(ReplayPolicy(EXPERT), "replay")) as served:
        yield served


def test_a_real_model_streams_token_by_token_with_the_sync_client(tiny: str) -> None:
    client = openai.OpenAI(base_url=tiny, api_key="none", max_retries=0)
    whole = client.chat.completions.create(model="tiny", messages=HI, max_tokens=12)
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=HI, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == whole.choices[0].message.content and len(deltas) > 3, deltas  # token by token
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and whole.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens


def test_the_async_client_streams_and_a_stop_string_is_never_sent(tiny: str) -> None:
    async def collect(**extra: Any) -> list[Any]:
        client = openai.AsyncOpenAI(base_url=tiny, api_key="none", max_retries=0)
        stream = await client.chat.completions.create(model="tiny", messages=HI, max_tokens=12, stream=True, **extra)
        return [chunk async for chunk in stream]

    chunks = asyncio.run(collect())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and all(c.usage is None for c in chunks)  # no usage chunk unless asked for
    stop = text[3:6]
    stopped = asyncio.run(collect(stop=[stop]))
    assert "".join(c.choices[0].delta.content or "" for c in stopped if c.choices) == text[: text.find(stop)]


def test_replayed_text_and_tool_calls_stream_in_openai_shape(replay: Served) -> None:
    client = openai.OpenAI(base_url=replay.url, api_key="none", max_retries=0)
    chunks = list(client.chat.completions.create(model="replay", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == EXPERT[0]
    called = list(client.chat.completions.create(model="replay", messages=HI, stream=True, tools=specs()))  # type: ignore[arg-type]
    calls = [call for c in called for call in (c.choices[0].delta.tool_calls or [])]
    assert [call.function.name for call in calls] == ["grid", "box"]  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"rows": 4, "cols": 4}  # type: ignore[union-attr]
    assert "".join(c.choices[0].delta.content or "" for c in called) == "Grid first."
    assert called[-1].choices[0].finish_reason == "tool_calls"


def test_n_streams_every_choice(replay: Served) -> None:
    client = openai.OpenAI(base_url=replay.url, api_key="none", max_retries=0)
    chunks = list(client.chat.completions.create(model="replay", messages=HI, stream=True, n=2))
    for index in (0, 1):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == index)
        assert text == EXPERT[0]


def test_the_raw_stream_is_sse_ending_with_done(replay: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", replay.port, timeout=30)
    body = {"model": "replay", "messages": HI, "stream": True}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    raw = response.read().decode()
    connection.close()
    assert response.status == 200 and response.getheader("content-type", "").startswith("text/event-stream")
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_a_failure_mid_stream_is_one_error_event() -> None:
    with Served(create_app(ReplayPolicy([]), "empty")) as served:
        client = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)
        with pytest.raises(openai.APIError, match="replay has only 0 recorded turns"):
            list(client.chat.completions.create(model="empty", messages=HI, stream=True))
        assert client.chat.completions.create(model="empty", messages=HI, stream=True) is not None  # serves on


def test_safe_prefix_holds_back_what_may_still_change() -> None:
    assert safe_prefix("hello wor", ["world"]) == "hello "
    assert safe_prefix("hello world!", ["world"]) == "hello "
    assert safe_prefix("caf\ufffd", []) == "caf"
    assert safe_prefix("plain", []) == "plain"
