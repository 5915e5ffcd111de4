"""Shared-prefix KV reuse: requests with different questions and images but one system prompt.

Over loopback with the official ``openai`` client and a real tiny HF model: agent-style first turns (the
sketchmind system prompt with the tool specs, then a distinct image and question) answer the same greedy
tokens with the shared prefix reused as without it, alone and batched together, and ``usage.prompt_tokens``
counts only what was prefilled (the prefix once, when it is first computed).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openai
import pytest
from loopback import Served
from test_server_batching import Gated, _wait_for

from sketchmind.models.base import Conversation, Sampling
from sketchmind.server import create_app

QUESTIONS = [
    "Where is the goal?",
    "Draw a box around the start, then tell me which way to go first.",
    "Count the holes in row 2.",
    "Is there a path? Answer yes or no.",
    "Describe the map.",
]
GREEDY: dict[str, Any] = {"max_tokens": 8, "temperature": 0}
ALONE = range(0, 5)  # requests sent one at a time
BATCHED = range(5, 10)  # requests sent together (all distinct from the ones before: no exact-message reuse)


def _system() -> str:
    from sketchmind.protocols import get_protocol
    from sketchmind.tools import specs

    return get_protocol("sketchmind").system_prompt(specs())


def _messages(i: int) -> list[dict[str, Any]]:
    """The system prompt with the tools, then an image and a question of request ``i``'s own."""
    pixels = np.random.default_rng(i).integers(0, 256, (48 + 16 * (i % 3), 64, 3), dtype=np.uint8)
    url = "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", pixels)[1].tobytes()).decode()
    question = QUESTIONS[i % len(QUESTIONS)]
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
    return [{"role": "system", "content": _system()}, {"role": "user", "content": content}]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("qwen2.5-vl")


@contextlib.contextmanager
def _client(app: Any) -> Iterator[openai.OpenAI]:
    with Served(app) as server:
        yield openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)


def _answer(client: openai.OpenAI, messages: list[dict[str, Any]]) -> tuple[str | None, int, int]:
    reply = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)  # type: ignore[call-overload]
    assert reply.usage is not None
    return reply.choices[0].message.content, reply.usage.completion_tokens, reply.usage.prompt_tokens


@pytest.fixture(scope="module")
def without_reuse(checkpoint: Path) -> list[tuple[str | None, int, int]]:
    """Each request answered alone by a server whose model reuses no prefix: the reference."""
    from sketchmind.models.hf import HFPolicy

    policy = HFPolicy(str(checkpoint))
    policy.prefix_cache = 0
    with _client(create_app(policy, "tiny", batch_window=0.0)) as client:
        return [_answer(client, _messages(i)) for i in (*ALONE, *BATCHED)]


def test_distinct_requests_reuse_the_system_prompt_and_answer_the_same_tokens(
    checkpoint: Path, without_reuse: list[tuple[str | None, int, int]]
) -> None:
    from sketchmind.models.hf import HFPolicy

    policy = HFPolicy(str(checkpoint))
    prefix_tokens = len(policy._tok(_system(), add_special_tokens=False)["input_ids"])
    gated = Gated(policy)
    app = create_app(gated, "tiny", batch_window=0.0)
    with _client(app) as client:
        alone = [_answer(client, _messages(i)) for i in ALONE]
        # Batched: one request holds the model while the others queue, then they run as one generate_batch.
        with ThreadPoolExecutor(len(BATCHED)) as pool:
            gated.hold()
            first = pool.submit(_answer, client, _messages(BATCHED[0]))
            assert gated.entered.wait(60)
            waiting = [pool.submit(_answer, client, _messages(i)) for i in BATCHED[1:]]
            _wait_for(lambda: app.state.batcher.stats()["waiting"] == len(BATCHED) - 1)
            gated.open()
        batched = [first.result(), *(f.result() for f in waiting)]
    assert gated.batches == [len(BATCHED) - 1]
    texts = [(text, out) for text, out, _ in without_reuse]
    assert [(text, out) for text, out, _ in alone + batched] == texts  # greedy tokens equal to no reuse
    assert len({text for text, _ in texts}) > 1  # the rows really differ: a mixed-up batch would show
    full = [prompt for _, _, prompt in without_reuse]
    assert len(policy._prefixes) == 1  # one system prompt, one cached prefix
    assert prefix_tokens > 100  # the system prompt with the tool specs is most of the prompt
    shared = len(next(iter(policy._prefixes.values())).ids)
    assert shared >= prefix_tokens  # the rendered system message: its text plus the template's tags
    assert alone[0][2] == full[0]  # the first request computed the prefix: everything was prefilled
    for (_, _, prompt), whole in zip(alone[1:] + batched, full[1:], strict=True):
        assert prompt == whole - shared  # later ones prefilled only what follows the system message


def test_the_shared_prefix_is_not_used_when_the_system_prompt_differs(checkpoint: Path) -> None:
    """A conversation whose system message is not a cached prefix's text prefills in full."""
    from sketchmind.models.hf import HFPolicy
    from sketchmind.protocols.base import Message

    policy = HFPolicy(str(checkpoint))

    def conversation(name: str, system: str) -> Conversation:
        messages: list[Message] = [
            {"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "text", "text": "Which way first?"}]},
        ]
        return Conversation(name, messages)

    sampling = Sampling(max_new_tokens=4)
    base = "You solve grid puzzles by drawing on them. " * 4
    one = policy.generate(conversation("a", base), sampling)
    other = policy.generate(conversation("b", base + "Answer briefly."), sampling)
    again = policy.generate(conversation("c", base), sampling)
    assert one.tokens_in is not None and other.tokens_in is not None and again.tokens_in is not None
    assert other.tokens_in > one.tokens_in  # a longer system prompt, prefilled in full: no reuse of the first
    assert len(policy._prefixes) == 2
    assert again.tokens_in < one.tokens_in  # the first system prompt again: its prefix is reused
    assert again.text == one.text


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl", "idefics3"])
def test_each_family_answers_the_same_with_the_prefix_reused_alone_and_batched(
    tiny_checkpoint: Callable[[str], Path], family: str
) -> None:
    """Per model family, on the backend directly: rows that start from the cached system prompt decode the same
    greedy tokens (and log-probabilities) as full prefills, one at a time and as one batch."""
    from sketchmind.models.hf import HFPolicy
    from sketchmind.protocols.base import Message

    rng = np.random.default_rng(0)
    images = {i: rng.integers(0, 256, (48 + 8 * i, 64 + 16 * (i % 3), 3), dtype=np.uint8) for i in range(6)}

    def conversation(name: str, i: int) -> Conversation:
        messages: list[Message] = [
            {"role": "system", "content": [{"type": "text", "text": _system()}]},
            {"role": "user", "content": [{"type": "image", "view": i}, {"type": "text", "text": QUESTIONS[i % 5]}]},
        ]
        return Conversation(f"{name}-{i}", messages, images)

    sampling = Sampling(max_new_tokens=6)
    reference = HFPolicy(str(tiny_checkpoint(family)))
    reference.prefix_cache = 0
    want = [reference.generate(conversation("full", i), sampling) for i in range(6)]
    policy = HFPolicy(str(tiny_checkpoint(family)))
    got = [policy.generate(conversation("alone", i), sampling) for i in range(3)]
    got += policy.generate_batch([conversation("batch", i) for i in range(3, 6)], sampling)
    assert len(policy._prefixes) == 1
    shared = len(next(iter(policy._prefixes.values())).ids)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert (a.text, a.tokens_out) == (b.text, b.tokens_out)
        assert a.logprob is not None and b.logprob is not None and abs(a.logprob - b.logprob) < 1e-3
        assert a.tokens_in == (b.tokens_in if i == 0 else (b.tokens_in or 0) - shared)
