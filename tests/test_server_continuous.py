"""Continuous batching (``server_continuous``, ``models/hf_running``): requests join a batch that is decoding.

Over loopback with the official ``openai`` client and a real tiny HF model. The reference answers come from
a server that answers one request at a time with plain ``generate`` calls (``max_batch=1``); under
continuous batching every answer must be the same, token for token. The driver is held at a chosen decode
step by a gate on ``RunningBatch.step`` (no test reads a clock), so a request provably arrives while the
batch decodes, and a short row provably finishes while a long one still decodes.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openai
import pytest
from loopback import Served

from sketchmind.models.base import Conversation, Sampling
from sketchmind.server import create_app
from sketchmind.server_continuous import ContinuousBatcher

LONG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}


def _image_part(seed: int) -> dict[str, Any]:
    pixels = np.random.default_rng(seed).integers(0, 256, (48 + 16 * seed, 64, 3), dtype=np.uint8)
    data = base64.b64encode(cv2.imencode(".png", pixels)[1].tobytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


# Requests of different prompt lengths and budgets, one with an image, one with a stop string.
NEWCOMERS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Where is the goal?"}], "max_tokens": 4},
    {
        "messages": [{"role": "user", "content": [_image_part(1), {"type": "text", "text": "Count the holes."}]}],
        "max_tokens": 9,
    },
    {
        "messages": [{"role": "user", "content": "Draw a box around the start, then tell me which way to go first."}],
        "max_tokens": 12,
    },
]


def _answer(client: openai.OpenAI, request: dict[str, Any], **extra: Any) -> tuple[str | None, int]:
    reply = client.chat.completions.create(model="tiny", temperature=0, **{**request, **extra})  # type: ignore[call-overload]
    assert reply.usage is not None
    return reply.choices[0].message.content, reply.usage.completion_tokens


def _streamed(client: openai.OpenAI, request: dict[str, Any]) -> str:
    chunks = client.chat.completions.create(model="tiny", temperature=0, stream=True, **request)  # type: ignore[call-overload]
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


class StepGate:
    """Holds the driver before the decode steps given to ``hold`` (counted from 1) until ``go``; records rows."""

    def __init__(self, batcher: ContinuousBatcher) -> None:
        self.steps = 0
        self.rows: list[int] = []  # rows decoded at each step
        self._gates: dict[int, tuple[threading.Event, threading.Event]] = {}  # step -> (reached, go)
        running = batcher.running
        step = running.step

        def gated() -> Any:
            self.steps += 1
            if self.steps in self._gates:
                reached, go = self._gates[self.steps]
                reached.set()
                assert go.wait(60), "the gate was never opened"
            self.rows.append(len(running))
            return step()

        running.step = gated  # type: ignore[method-assign]

    def hold(self, *steps: int) -> None:
        self._gates.update({at: (threading.Event(), threading.Event()) for at in steps})

    def reached(self, at: int) -> bool:
        return self._gates[at][0].wait(60)

    def go(self, at: int) -> None:
        self._gates[at][1].set()


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Callable[[str], Path]) -> str:
    return str(tiny_checkpoint("qwen2.5-vl"))


@pytest.fixture(scope="module")
def reference(checkpoint: str) -> Iterator[openai.OpenAI]:
    """A server that answers one request at a time with plain ``generate`` calls."""
    from sketchmind.models.hf import HFPolicy

    app = create_app(HFPolicy(checkpoint), "tiny", max_batch=1)
    assert not isinstance(app.state.batcher, ContinuousBatcher)
    with Served(app) as server:
        yield openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)


@pytest.fixture
def served(checkpoint: str) -> Iterator[tuple[Any, StepGate, openai.OpenAI]]:
    from sketchmind.models.hf import HFPolicy

    app = create_app(HFPolicy(checkpoint), "tiny")
    assert isinstance(app.state.batcher, ContinuousBatcher)
    with Served(app) as server:
        yield app, StepGate(app.state.batcher), openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)


def _join_while_decoding(
    served: tuple[Any, StepGate, openai.OpenAI], calls: list[Callable[[], Any]]
) -> tuple[Future[Any], list[Future[Any]], ThreadPoolExecutor]:
    """The long request decodes alone; ``calls`` arrive while it is held before step 3 (the caller lets it go)."""
    app, gate, client = served
    pool = ThreadPoolExecutor(len(calls) + 1)
    gate.hold(3)
    first = pool.submit(_answer, client, LONG)
    assert gate.reached(3)
    waiting = [pool.submit(call) for call in calls]
    _wait_for(lambda: app.state.batcher.stats()["waiting"] == len(calls))
    return first, waiting, pool


def test_requests_join_a_decoding_batch_and_leave_it_with_the_tokens_they_get_alone(
    reference: openai.OpenAI, served: tuple[Any, StepGate, openai.OpenAI]
) -> None:
    app, gate, client = served
    want_long = _answer(reference, LONG)
    want = [_answer(reference, request) for request in NEWCOMERS]
    assert want_long[1] == LONG["max_tokens"] and len({text for text, _ in want}) > 1  # the rows differ
    gate.hold(20)
    first, waiting, pool = _join_while_decoding(served, [lambda r=r: _answer(client, r) for r in NEWCOMERS])
    gate.go(3)  # the newcomers join after step 3; the longest of them needs 12 tokens, the long row 40
    assert gate.reached(20)
    assert all(future.done() for future in waiting) and not first.done()  # answered without waiting for it
    gate.go(20)
    pool.shutdown(wait=True)
    assert [f.result() for f in waiting] == want  # text and token count, row by row
    assert first.result() == want_long
    assert max(gate.rows) == 1 + len(NEWCOMERS) and gate.rows[-1] == 1  # all decoded together, then alone
    stats = app.state.batcher.stats()
    assert stats["joined"] == len(NEWCOMERS) and stats["batches"] == 2 and stats["largest"] == 1 + len(NEWCOMERS)
    assert stats["waiting"] == 0 and stats["running"] == 0 and stats["steps"] == LONG["max_tokens"] - 1


def test_streams_stop_strings_and_n_share_the_batch(
    reference: openai.OpenAI, served: tuple[Any, StepGate, openai.OpenAI]
) -> None:
    app, gate, client = served
    stream_request = NEWCOMERS[2]
    stopping = {**NEWCOMERS[2], "max_tokens": 20}
    full = _answer(reference, stopping)[0]
    assert full is not None and len(full) > 6
    stop = full[4:6]  # a stop string the greedy answer produces
    stopping["stop"] = [stop]
    want_stream = _answer(reference, stream_request)[0]
    want_stop = _answer(reference, stopping)
    want_n = _answer(reference, NEWCOMERS[1])
    assert want_stop[0] == full[: full.index(stop)]

    def two() -> list[str | None]:
        reply = client.chat.completions.create(model="tiny", temperature=0, n=2, **NEWCOMERS[1])  # type: ignore[call-overload]
        return [choice.message.content for choice in reply.choices]

    calls = [lambda: _streamed(client, stream_request), lambda: _answer(client, stopping), two]
    first, waiting, pool = _join_while_decoding(served, calls)
    gate.go(3)
    pool.shutdown(wait=True)
    assert first.result() == _answer(reference, LONG)
    assert waiting[0].result() == want_stream
    assert waiting[1].result() == want_stop
    assert waiting[2].result() == [want_n[0], want_n[0]]
    assert max(gate.rows) == 1 + 4  # the long row, the stream, the stopping row and both copies
    assert app.state.batcher.stats()["joined"] == 3


def test_a_request_that_fails_its_prefill_fails_alone(
    reference: openai.OpenAI, served: tuple[Any, StepGate, openai.OpenAI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newcomers' joint prefill fails; each is prefilled again alone, and only the culprit fails."""
    app, gate, client = served
    policy = app.state.policy
    inputs = policy._inputs

    def poisoned(plans: Any, max_new_tokens: int) -> Any:
        if any("poison" in str(plan.conversation.messages) for plan in plans):
            raise RuntimeError("this request poisons the model")
        return inputs(plans, max_new_tokens)

    monkeypatch.setattr(policy, "_inputs", poisoned)
    bad = {"messages": [{"role": "user", "content": "poison"}], "max_tokens": 4}
    calls = [lambda: _answer(client, NEWCOMERS[0]), lambda: _answer(client, bad), lambda: _answer(client, NEWCOMERS[2])]
    first, waiting, pool = _join_while_decoding(served, calls)
    gate.go(3)
    pool.shutdown(wait=True)
    with pytest.raises(openai.InternalServerError, match="poisons the model"):
        waiting[1].result()
    assert [waiting[0].result(), waiting[2].result()] == [_answer(reference, NEWCOMERS[i]) for i in (0, 2)]
    assert first.result() == _answer(reference, LONG)  # the running row went on
    assert app.state.batcher.stats()["retried"] == 1


def test_a_running_batch_saves_each_rows_cache_for_its_next_turn(checkpoint: str) -> None:
    """Directly on the backend: a second turn after continuous batching prefills as little, with the same tokens."""
    from sketchmind.models.hf import HFPolicy
    from sketchmind.models.hf_running import Request

    alone, batched = HFPolicy(checkpoint), HFPolicy(checkpoint)
    questions = ["hi", "Where is the goal?", "Count the holes in row 2."]

    def turns(tag: str, answers: list[str] | None = None) -> list[Conversation]:
        out = []
        for i, question in enumerate(questions):
            messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
            if answers is not None:
                messages += [{"role": "assistant", "content": answers[i]}, {"role": "user", "content": "and then?"}]
            out.append(Conversation(id=f"{tag}{i}", messages=messages))
        return out

    budgets = [Sampling(max_new_tokens=n) for n in (9, 3, 6)]
    want = [alone.generate(c, s) for c, s in zip(turns("a"), budgets, strict=True)]
    running = batched.running_batch()
    assert running is not None
    requests = [Request([c], s) for c, s in zip(turns("b"), budgets, strict=True)]
    done = running.admit(requests[:1])
    done += running.step()
    done += running.admit(requests[1:])  # joins a row that has decoded two tokens
    while len(running):
        done += running.step()
    assert set(done) == set(requests)
    got = [r.generations()[0] for r in requests]
    assert [(g.text, g.tokens_out) for g in got] == [(w.text, w.tokens_out) for w in want]
    again = Sampling(max_new_tokens=5)
    want_next = [alone.generate(c, again) for c in turns("a", [w.text for w in want])]
    requests = [Request([c], again) for c in turns("b", [g.text for g in got])]
    running.admit(requests)
    while len(running):
        running.step()
    got_next = [r.generations()[0] for r in requests]
    assert [(g.text, g.tokens_in) for g in got_next] == [(w.text, w.tokens_in) for w in want_next]
    assert all(g.tokens_in is not None and g.tokens_in < 30 for g in got_next)  # only the new turn was prefilled
