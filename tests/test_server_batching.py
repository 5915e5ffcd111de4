"""Concurrent requests share one ``generate_batch`` call (``server_batching``), with the same outputs as alone.

Over loopback with the official ``openai`` client and a real tiny HF model: requests that wait while the model
is busy run as one batch, their greedy answers are token-for-token the answers they get one at a time, and a
failing request fails alone. The model is held busy by a gate, not by timing: no test reads a clock. The
``Batcher``'s grouping rules (same sampling, no seeded sampling, streams alone, ``max_batch``) are checked
directly on a fake policy.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openai
import pytest
from loopback import Served

from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.server import create_app
from sketchmind.server_batching import Batcher

QUESTIONS = [
    "hi",
    "Where is the goal?",
    "Draw a box around the start, then tell me which way to go first.",
    "Count the holes in row 2.",
    "Is there a path? Answer yes or no.",
    "Describe the map.",
]
GREEDY: dict[str, Any] = {"max_tokens": 10, "temperature": 0}


def _image_part(seed: int) -> dict[str, Any]:
    pixels = np.random.default_rng(seed).integers(0, 256, (48 + 16 * seed, 64, 3), dtype=np.uint8)
    data = base64.b64encode(cv2.imencode(".png", pixels)[1].tobytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def _messages(i: int) -> list[dict[str, Any]]:
    """Requests of different lengths, some with an image of their own size: batched rows need padding."""
    question = QUESTIONS[i % len(QUESTIONS)]
    content: Any = [_image_part(i), {"type": "text", "text": question}] if i % 3 == 1 else question
    return [{"role": "user", "content": content}]


class Gated(Policy):
    """A real policy behind a gate: ``hold()`` makes the next call wait for ``open()``. Counts batched calls.

    A call whose conversations mention ``poison`` fails, as a backend fails on a request it cannot serve.
    """

    def __init__(self, inner: Policy, poison: str | None = None) -> None:
        self.inner = inner
        self.poison = poison
        self.batches: list[int] = []  # rows of each generate_batch call
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self.entered.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def _enter(self, conversations: Sequence[Conversation]) -> None:
        self.entered.set()
        assert self._open.wait(60), "the gate was never opened"
        if self.poison and any(self.poison in str(c.messages) for c in conversations):
            raise BackendError("this request poisons the model")

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self._enter([conversation])
        return self.inner.generate(conversation, sampling)

    def generate_batch(
        self, conversations: Sequence[Conversation], sampling: Sampling = Sampling()
    ) -> list[Generation]:
        self.batches.append(len(conversations))
        self._enter(conversations)
        return self.inner.generate_batch(conversations, sampling)

    def release(self, conversation_id: str) -> None:
        self.inner.release(conversation_id)

    def fork(self, source_id: str, target_id: str) -> None:
        self.inner.fork(source_id, target_id)


@pytest.fixture(scope="module")
def hf(tiny_checkpoint: Callable[[str], Path]) -> Policy:
    from sketchmind.models.hf import HFPolicy

    return HFPolicy(str(tiny_checkpoint("qwen2.5-vl")))


def _answer(client: openai.OpenAI, messages: list[dict[str, Any]], **extra: Any) -> tuple[str | None, int]:
    reply = client.chat.completions.create(model="tiny", messages=messages, **{**GREEDY, **extra})  # type: ignore[call-overload]
    assert reply.usage is not None
    return reply.choices[0].message.content, reply.usage.completion_tokens


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while not condition():
        assert time.monotonic() < deadline, "the requests never queued"
        time.sleep(0.01)


def _while_busy(
    policy: Gated, app: Any, client: openai.OpenAI, requests: list[list[dict[str, Any]]]
) -> tuple[Future[Any], list[Future[Any]]]:
    """One request holds the model; ``requests`` arrive meanwhile and all wait; then the model is freed."""
    pool = ThreadPoolExecutor(len(requests) + 1)
    policy.hold()
    first = pool.submit(_answer, client, _messages(0))
    assert policy.entered.wait(60)
    waiting = [pool.submit(_answer, client, messages) for messages in requests]
    _wait_for(lambda: app.state.batcher.stats()["waiting"] == len(requests))
    policy.open()
    pool.shutdown(wait=True)
    return first, waiting


@pytest.fixture
def served(hf: Policy) -> Iterator[tuple[Gated, Any, openai.OpenAI]]:
    policy = Gated(hf, poison="poison")
    app = create_app(policy, "tiny", batch_window=0.0)
    with Served(app) as server:
        yield policy, app, openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)


def test_requests_that_wait_together_run_as_one_batch_with_the_same_greedy_tokens(
    served: tuple[Gated, Any, openai.OpenAI],
) -> None:
    policy, app, client = served
    alone = [_answer(client, _messages(i)) for i in range(len(QUESTIONS))]  # one at a time
    assert policy.batches == []  # a request alone is a plain generate call
    first, waiting = _while_busy(policy, app, client, [_messages(i) for i in range(1, len(QUESTIONS))])
    assert [first.result(), *(f.result() for f in waiting)] == alone  # token counts and text, row by row
    assert policy.batches == [len(QUESTIONS) - 1]  # the waiting requests: one generate_batch call
    stats = app.state.batcher.stats()
    assert stats["largest"] == len(QUESTIONS) - 1 and stats["batched_calls"] == 1 and stats["waiting"] == 0
    assert stats["requests"] == 2 * len(QUESTIONS) and stats["retried"] == 0
    assert len({text for text, _ in alone}) > 1  # the rows really differ: a mixed-up batch would show


def test_a_failing_request_fails_alone(served: tuple[Gated, Any, openai.OpenAI]) -> None:
    policy, app, client = served
    alone = [_answer(client, _messages(i)) for i in (1, 2, 3)]
    poisoned = [{"role": "user", "content": "poison"}]
    first, waiting = _while_busy(policy, app, client, [_messages(1), poisoned, _messages(2), _messages(3)])
    assert first.result() == _answer(client, _messages(0))
    with pytest.raises(openai.InternalServerError, match="poisons the model"):
        waiting[1].result()
    assert [waiting[i].result() for i in (0, 2, 3)] == alone
    assert policy.batches == [4]  # batched once; then each ran alone, and only the culprit failed
    assert app.state.batcher.stats()["retried"] == 1


def test_seeded_samples_and_token_streams_are_not_batched(served: tuple[Gated, Any, openai.OpenAI]) -> None:
    policy, app, client = served
    sampled = {"temperature": 1.0, "seed": 7}
    want = _answer(client, _messages(2), **sampled)
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model="tiny", messages=_messages(3), stream=True, **GREEDY)  # type: ignore[call-overload]
        if chunk.choices
    )
    policy.hold()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(_answer, client, _messages(0))
        assert policy.entered.wait(60)
        seeded = [pool.submit(_answer, client, _messages(2), **sampled) for _ in range(2)]
        stream = pool.submit(
            lambda: "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="tiny", messages=_messages(3), stream=True, **GREEDY)  # type: ignore[call-overload]
                if c.choices
            )
        )
        _wait_for(lambda: app.state.batcher.stats()["waiting"] == 3)
        policy.open()
    first.result()
    assert [f.result() for f in seeded] == [want, want]  # seed 7 samples the same, wherever it waited
    assert stream.result() == streamed
    assert policy.batches == []  # each ran alone


def test_a_repeated_request_starts_from_the_cache_of_the_last_one(served: tuple[Gated, Any, openai.OpenAI]) -> None:
    """The same messages again fork the recent session: one token prefilled, the same greedy answer."""
    _, _, client = served
    messages = _messages(4)
    first = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)  # type: ignore[call-overload]
    again = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)  # type: ignore[call-overload]
    assert first.usage is not None and again.usage is not None
    assert first.usage.prompt_tokens > 10 and again.usage.prompt_tokens == 1  # prefilled: only the last prompt token
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.completion_tokens == first.usage.completion_tokens


# ------------------------------------------------------------------------------- the batcher directly


class Echo(Policy):
    """Answers each conversation with its id; records the rows of every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.calls.append([conversation.id])
        return Generation(text=conversation.id)

    def generate_batch(
        self, conversations: Sequence[Conversation], sampling: Sampling = Sampling()
    ) -> list[Generation]:
        self.calls.append([c.id for c in conversations])
        return [Generation(text=c.id) for c in conversations]


def _queued(batcher: Batcher, policy: Echo, jobs: list[tuple[list[str], Sampling, bool]]) -> list[list[str]]:
    """Run ``jobs`` (ids, sampling, batchable) that all queue behind one busy call; each job's texts."""
    busy, free = threading.Event(), threading.Event()

    def hold() -> list[Generation]:
        busy.set()
        assert free.wait(30)
        return [Generation(text="first")]

    def submit(ids: list[str], sampling: Sampling, batchable: bool) -> list[str]:
        rows = [Conversation(id=i, messages=[]) for i in ids]

        def alone() -> list[Generation]:
            return policy.generate_batch(rows, sampling)

        return [g.text for g in batcher.run(rows, sampling, alone, batchable)]

    with ThreadPoolExecutor(len(jobs) + 1) as pool:
        first = pool.submit(batcher.run, [], Sampling(), hold, False)
        assert busy.wait(30)
        futures = []
        for count, job in enumerate(jobs, 1):  # one by one: the queue's order is the list's
            futures.append(pool.submit(submit, *job))
            _wait_for(lambda count=count: batcher.stats()["waiting"] == count)  # type: ignore[misc]
        free.set()
        assert [g.text for g in first.result()] == ["first"]
        return [f.result() for f in futures]


def test_only_requests_with_the_same_sampling_share_a_batch_and_max_batch_bounds_its_rows() -> None:
    policy = Echo()
    batcher = Batcher(policy, max_batch=4, window=0.0)
    greedy, warm = Sampling(max_new_tokens=8), Sampling(max_new_tokens=8, temperature=0.7)
    jobs = [
        (["a"], greedy, True),
        (["b"], warm, True),
        (["c1", "c2"], greedy, True),
        (["d"], greedy, False),  # e.g. a token stream: always alone
        (["e"], warm, True),
        (["f1", "f2"], greedy, True),  # would make 5 rows with a and c: waits for the next batch
    ]
    texts = _queued(batcher, policy, jobs)
    assert texts == [ids for ids, _, _ in jobs]  # each caller gets its own rows, in order
    assert policy.calls == [["a", "c1", "c2"], ["b", "e"], ["d"], ["f1", "f2"]]  # oldest first, then its kin
    stats = batcher.stats()
    assert stats["batches"] == 5 and stats["requests"] == 7 and stats["largest"] == 2 and stats["batched_calls"] == 2


def test_max_batch_1_runs_one_request_at_a_time() -> None:
    policy = Echo()
    texts = _queued(Batcher(policy, max_batch=1), policy, [(["a"], Sampling(), True), (["b"], Sampling(), True)])
    assert texts == [["a"], ["b"]] and policy.calls == [["a"], ["b"]]
