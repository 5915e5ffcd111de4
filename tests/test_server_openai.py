"""``sketchmind serve`` keeps OpenAI's contract, through the official ``openai`` client over loopback.

A request without ``model`` is refused; a parameter the server does not honour is refused in one line
(neutral values pass); ``n`` samples several completions from a real tiny HF model; drawing calls come
back as ``tool_calls`` when the request offers ``tools``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from loopback import Recording, Served
from recorded import EXPERT

from sketchmind.models.replay import ReplayPolicy
from sketchmind.server import create_app
from sketchmind.server_params import HONOURED
from sketchmind.tools import specs

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def replay() -> Iterator[tuple[openai.OpenAI, Recording, Served]]:
    policy = Recording(ReplayPolicy(EXPERT))
    with Served(create_app(policy, "replay")) as served:
        yield openai.OpenAI(base_url=served.url, api_key="none", max_retries=0), policy, served


def post(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_request_without_model_is_refused_as_openai_refuses_it(replay: tuple[Any, Recording, Served]) -> None:
    _, policy, served = replay
    before = len(policy.seen)
    status, answer = post(served.port, {"messages": HI})
    assert status == 400 and answer == {
        "error": {
            "message": "you must provide a model parameter",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert len(policy.seen) == before


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"response_format": {"type": "json_object"}}, "'response_format' is not supported"),
        ({"logit_bias": {"15": 5}}, "'logit_bias' is not supported"),
        ({"frequency_penalty": 0.5}, "'frequency_penalty' is not supported"),
        ({"top_logprobs": 3, "logprobs": True}, "'top_logprobs' is not supported"),
        ({"tools": specs(["box"]), "tool_choice": "required"}, "cannot force a tool call"),
        ({"tools": specs(["box"]), "tool_choice": {"type": "function", "function": {"name": "box"}}}, "'auto'"),
        ({"parallel_tool_calls": False}, "'parallel_tool_calls': false"),
        ({"n": 9}, "'n' must be an integer from 1 to 8"),
        ({"stream_options": {"include_usage": True}}, "only allowed with stream=true"),
        ({"extra_body": {"top_k": 5}}, "unsupported parameter 'top_k'"),
    ],
    ids=[
        "response_format",
        "logit_bias",
        "penalty",
        "top_logprobs",
        "required",
        "named",
        "parallel",
        "n",
        "opts",
        "top_k",
    ],
)
def test_a_parameter_the_server_does_not_honour_is_refused_in_one_line(
    replay: tuple[openai.OpenAI, Recording, Served], extra: dict[str, Any], fragment: str
) -> None:
    client, policy, _ = replay
    before = len(policy.seen)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="replay", messages=HI, **extra)  # type: ignore[call-overload]
    message = refused.value.body["message"]  # type: ignore[index]
    assert fragment in message and "\n" not in message and len(message) < 400, message
    assert len(policy.seen) == before  # refused before the model was asked


def test_unknown_parameters_name_what_is_honoured(replay: tuple[Any, Recording, Served]) -> None:
    status, answer = post(replay[2].port, {"model": "replay", "messages": HI, "functions": []})
    assert status == 400 and "'functions' is deprecated" in answer["error"]["message"]
    status, answer = post(replay[2].port, {"model": "replay", "messages": HI, "reasoning_effort": "low"})
    assert status == 400 and ", ".join(HONOURED) in answer["error"]["message"]


def test_neutral_values_and_nulls_are_accepted(replay: tuple[openai.OpenAI, Recording, Served]) -> None:
    client, _, served = replay
    answer = client.chat.completions.create(
        model="replay",
        messages=HI,
        frequency_penalty=0,
        presence_penalty=0.0,
        response_format={"type": "text"},
        tool_choice="none",
        tools=specs(["box"]),
        parallel_tool_calls=True,
        user="someone",
        n=1,
    )
    assert answer.choices[0].message.content == EXPERT[0]  # tool_choice none: the text, as written
    status, _ = post(served.port, {"model": "replay", "messages": HI, "response_format": None, "logit_bias": None})
    assert status == 200


def test_drawing_calls_come_back_as_tool_calls_when_tools_are_offered(
    replay: tuple[openai.OpenAI, Recording, Served],
) -> None:
    client, _, _ = replay
    answer = client.chat.completions.create(model="replay", messages=HI, tools=specs())  # type: ignore[arg-type]
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Grid first."
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["grid", "box"]  # type: ignore[union-attr]
    assert json.loads(calls[1].function.arguments) == {"view": 1, "bbox": [64, 0, 128, 64], "label": "goal"}  # type: ignore[union-attr]
    assert all(c.type == "function" and c.id.startswith("call_") for c in calls)
    # Without tools the same turn is the policy's text, tags and all.
    plain = client.chat.completions.create(model="replay", messages=HI)
    assert plain.choices[0].message.content == EXPERT[0] and not plain.choices[0].message.tool_calls
    # Only offered functions are lifted: a call to one the client does not know stays in the text.
    other = client.chat.completions.create(model="replay", messages=HI, tools=specs(["line"]))  # type: ignore[arg-type]
    assert other.choices[0].message.content == EXPERT[0] and not other.choices[0].message.tool_calls


def test_an_answer_turn_stays_text_with_tools_offered(replay: tuple[openai.OpenAI, Recording, Served]) -> None:
    client, _, _ = replay
    history: list[Any] = [*HI, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
    history += [{"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    answer = client.chat.completions.create(model="replay", messages=history, tools=specs())  # type: ignore[arg-type]
    assert answer.choices[0].message.content == EXPERT[2] and answer.choices[0].finish_reason == "stop"


def test_n_samples_several_completions_from_a_real_model(tiny_checkpoint: Callable[[str], Path]) -> None:
    from sketchmind.models.hf import HFPolicy

    policy = Recording(HFPolicy(str(tiny_checkpoint("qwen2.5-vl"))))
    with Served(create_app(policy, "tiny")) as served:
        client = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)
        answer = client.chat.completions.create(
            model="tiny", messages=HI, n=4, temperature=1.0, seed=3, max_tokens=12, logprobs=True
        )
        assert [c.index for c in answer.choices] == [0, 1, 2, 3]
        texts = [c.message.content for c in answer.choices]
        assert len(set(texts)) > 1, texts  # sampled with seeds 3..6: not four copies of one
        assert answer.usage is not None and 4 < answer.usage.completion_tokens <= 4 * 12
        assert all(c.logprobs is not None for c in answer.choices)
        assert len({c.id for c in policy.seen}) == 4  # each sample its own cache row
        again = client.chat.completions.create(model="tiny", messages=HI, n=4, temperature=1.0, seed=3, max_tokens=12)
        assert [c.message.content for c in again.choices] == texts  # a seed makes n samples reproducible
        greedy = client.chat.completions.create(model="tiny", messages=HI, n=2, max_tokens=6)
        assert greedy.choices[0].message.content == greedy.choices[1].message.content
    with Served(create_app(policy.inner, "tiny")) as served:  # the backend itself: one generate_batch call
        client = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)
        batched = client.chat.completions.create(model="tiny", messages=HI, n=4, temperature=1.0, seed=3, max_tokens=12)
        assert [c.message.content for c in batched.choices] == texts  # the same samples, batched or one by one
