"""``stream=true``: the reply as Server-Sent Events in OpenAI's ``chat.completion.chunk`` shape.

The first chunk carries ``delta.role``, then content deltas, then a chunk with the ``finish_reason``; with
``stream_options.include_usage`` every chunk has ``usage: null`` and a last chunk with empty ``choices``
carries the usage; ``data: [DONE]`` ends the stream, as OpenAI and vLLM end it.

With one completion and no ``tools`` the text streams token by token where the policy decodes
incrementally (``Policy.generate_stream``). The text held back is what could still change: the tail
that may begin a stop string (the final text is cut before it) and an unfinished UTF-8 character.
With ``n > 1`` or ``tools`` the completions are generated first and then sent in pieces: a drawing
call must arrive as one ``tool_calls`` delta, not as tags that are later taken back.

A failure after the stream has started cannot change the status code any more: it is sent as one
``data: {"error": ...}`` event (OpenAI's shape; the SDK raises it), then ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from sketchmind.models.base import BackendError, Generation, Sampling
from sketchmind.server_replies import finish_reason, reply_message, usage

PIECE = 16  # characters per content delta when a whole text is sent in pieces
_DONE = object()


def _event(payload: Mapping[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class Chunks:
    """The chunk objects of one streamed reply (one id, one ``created``, one model name)."""

    def __init__(self, model_name: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name = model_name
        self.include_usage = include_usage

    def chunk(self, index: int, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        """One ``chat.completion.chunk`` event for choice ``index``."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_name,
            "choices": [{"index": index, "delta": dict(delta), "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            body["usage"] = None
        return _event(body)

    def tail(self, generations: Sequence[Generation]) -> list[bytes]:
        """The usage chunk (when asked for) and ``[DONE]``."""
        events = []
        if self.include_usage:
            body = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model_name,
                "choices": [],
                "usage": usage(generations),
            }
            events.append(_event(body))
        return [*events, _event("[DONE]")]


def error_event(message: str, kind: str = "server_error") -> bytes:
    """A failure after the stream started, as OpenAI sends one: an event holding only ``error``."""
    return _event({"error": {"message": " ".join(message.split()), "type": kind, "param": None, "code": None}})


def safe_prefix(text: str, stops: Sequence[str]) -> str:
    """The part of ``text`` that can no longer change: without a trailing partial character or stop string."""
    end = len(text)
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut >= 0:
        end = cut
    for stop in stops:  # a tail that may still grow into a stop string waits for the next token
        for length in range(min(len(stop) - 1, end), 0, -1):
            if text[end - length : end] == stop[:length]:
                end -= length
                break
    while end and text[end - 1] == "\ufffd":  # half a UTF-8 character: the next byte completes it
        end -= 1
    return text[:end]


def pieces(chunks: Chunks, index: int, generation: Generation, tools: Any, sampling: Sampling) -> list[bytes]:
    """A finished completion as deltas: role, its content in pieces, its tool calls, its finish reason."""
    content, calls = reply_message(generation, tools)
    events = [chunks.chunk(index, {"role": "assistant", "content": ""})]
    text = content or ""
    events += [chunks.chunk(index, {"content": text[i : i + PIECE]}) for i in range(0, len(text), PIECE)]
    if calls:
        deltas = [{"index": i, **call} for i, call in enumerate(calls)]
        events.append(chunks.chunk(index, {"tool_calls": deltas}))
    events.append(chunks.chunk(index, {}, finish_reason(generation, calls, sampling)))
    return events


async def stream_reply(
    run: Callable[[Callable[[str], None] | None], list[Generation]],
    chunks: Chunks,
    sampling: Sampling,
    tools: Any,
    incremental: bool,
    on_failure: Callable[[BaseException], str],
) -> AsyncIterator[bytes]:
    """The SSE events of one reply. ``run(on_text)`` generates in a worker thread; with ``incremental`` it
    reports the text so far through ``on_text`` and each new safe part is sent at once."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    sent = ""

    def on_text(text: str) -> None:  # in the worker thread
        loop.call_soon_threadsafe(queue.put_nowait, text)

    def work() -> list[Generation]:
        try:
            return run(on_text if incremental else None)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    task = loop.run_in_executor(None, work)
    if incremental:
        yield chunks.chunk(0, {"role": "assistant", "content": ""})
        while (item := await queue.get()) is not _DONE:
            ready = safe_prefix(item, sampling.stop)
            if len(ready) > len(sent) and ready.startswith(sent):
                yield chunks.chunk(0, {"content": ready[len(sent) :]})
                sent = ready
    try:
        generations = await task
    except (BackendError, Exception) as error:  # headers are out: the failure becomes one error event
        yield error_event(on_failure(error))
        yield _event("[DONE]")
        return
    if incremental:
        (generation,) = generations
        if generation.text.startswith(sent) and len(generation.text) > len(sent):
            yield chunks.chunk(0, {"content": generation.text[len(sent) :]})
        yield chunks.chunk(0, {}, finish_reason(generation, [], sampling))
    else:
        for index, generation in enumerate(generations):
            for event in pieces(chunks, index, generation, tools, sampling):
                yield event
    for event in chunks.tail(generations):
        yield event
