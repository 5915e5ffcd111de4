"""An OpenAI-compatible chat server over any ``Policy``: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Any OpenAI client (the ``openai`` SDK, ``OpenAIPolicy``, LangChain, curl) can then drive a local
model (``HFPolicy``), a replayed trace (``ReplayPolicy``) or a proxy to another server. Images must
arrive inline as ``data:`` URLs; http(s) image URLs are refused, the server fetches nothing. Responses
are ChatCompletion objects (``server_replies.py``: ``tool_calls`` when the policy calls offered tools),
or Server-Sent Events with ``stream=true`` (``server_stream.py``); parameters it does not honour are
refused (``server_params.py``).

A request whose messages extend a recent request's reuses that request's conversation id
(``server_sessions.py``), so a multi-turn client gets the HF backend's KV-cache reuse over HTTP too:
turn k prefills only what is new. Any request also starts from the cached KV of a system prompt the HF
backend has seen before (its shared-prefix reuse), so distinct requests from agents prefill only what follows
it; ``usage.prompt_tokens`` counts the tokens actually prefilled. Concurrent requests share the model: with
the HF backend they join one running batch between decode steps and leave it as soon as they finish
(``server_continuous.py``, continuous batching as vLLM's); with other batching backends the requests that
wait share one ``policy.generate_batch`` call (``server_batching.py``). Both keep greedy outputs the same as
unbatched ones, and ``GET /stats`` counts what they did. ``concurrency`` bounds how many ``generate_batch``
calls run at once (default 1, as a local GPU model is not thread-safe); a running batch has one driver.

Every request is bounded (``Limits``): body bytes (refused with 413 from Content-Length, or as soon as a
chunked body passes the limit, before it is all read), messages, images, pixels per image and in all,
text characters and ``max_tokens``. Errors are one line in OpenAI's error shape.

The server binds to 127.0.0.1 by default; it has no authentication, so expose it with care (binding
anything else prints a one-line warning on stderr). FastAPI is
imported at module level (its route signatures need ``Request`` in module globals); ``import sketchmind``
does not import this module.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import numpy as np
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from sketchmind.images import ImageInputError, image_size, load_image
from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.protocols.base import Message
from sketchmind.server_batching import Batcher
from sketchmind.server_continuous import ContinuousBatcher
from sketchmind.server_params import ParameterError, Settings, check_parameters
from sketchmind.server_replies import completion_response
from sketchmind.server_sessions import Sessions, with_id
from sketchmind.server_stream import Chunks, stream_reply

log = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant", "tool")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[^;,]*)*),(.*)", re.S)


@dataclass(frozen=True)
class Limits:
    """What one chat-completions request may hold; anything over a limit is refused in one line.

    The defaults admit a full agent run (45 views of up to 16 Mpx each, as ``Canvas`` makes them, within
    the total) and bound what one request can make the server hold: ~32 MB read, ~200 MB decoded pixels.
    """

    max_body_bytes: int = 32 << 20
    max_messages: int = 512
    max_images: int = 64
    max_image_pixels: int = 16_777_216  # one image (the canvas's own view limit, 4096 x 4096)
    max_total_pixels: int = 67_108_864  # all images of one request together
    max_text_chars: int = 1_000_000  # text parts, tool calls and tool specs together
    max_tokens: int = 4096
    max_n: int = 8  # completions one request may sample (``n``)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


class RequestError(ValueError):
    """A request the server cannot serve; answered with 400 (or ``status``) and this one-line message."""

    def __init__(
        self, message: str, status: int = 400, kind: str = "invalid_request_error", code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code


@dataclass
class _Budget:
    """What is left of one request's limits while its messages are read."""

    limits: Limits
    images: dict[int, np.ndarray] = field(default_factory=dict)
    pixels: int = 0
    chars: int = 0

    def text(self, count: int, where: str) -> None:
        self.chars += count
        if self.chars > self.limits.max_text_chars:
            raise RequestError(
                f"{where}: the request holds over {self.limits.max_text_chars} characters of text",
                413,
                code="text_too_long",
            )


def _decode_image(url: Any, where: str, budget: _Budget | None = None) -> np.ndarray:
    if not isinstance(url, str) or not url:
        raise RequestError(f"{where}: image_url.url must be a non-empty string")
    if url.startswith(("http://", "https://")):
        raise RequestError(f"{where}: image URLs are not fetched; send the image inline as a data: URL (base64)")
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise RequestError(f"{where}: unsupported image URL {url[:40]!r}; send a data:image/...;base64,... URL")
    if ";base64" not in match.group(2).lower():
        raise RequestError(f"{where}: the image data URL must be base64-encoded")
    try:
        data = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}: the image data URL is not valid base64") from None
    limit = None
    if budget is not None:
        limits = budget.limits
        size = image_size(data)
        if size is not None:  # refused from the header, before a pixel is decoded
            pixels = size[0] * size[1]
            if pixels > limits.max_image_pixels:
                raise RequestError(
                    f"{where}: the image is {size[0]}x{size[1]}, over the limit of {limits.max_image_pixels} pixels",
                    413,
                    code="image_too_large",
                )
            if budget.pixels + pixels > limits.max_total_pixels:
                raise RequestError(
                    f"{where}: the request's images pass the limit of {limits.max_total_pixels} pixels in all",
                    413,
                    code="image_too_large",
                )
        limit = min(limits.max_image_pixels, limits.max_total_pixels - budget.pixels)
    try:
        array = load_image(data, max_pixels=limit)
    except ImageInputError as error:
        raise RequestError(f"{where}: {error}") from None
    if budget is not None:
        budget.pixels += int(array.shape[0] * array.shape[1])
    return array


def _content(content: Any, where: str, budget: _Budget) -> list[dict[str, Any]]:
    """OpenAI message content (string, parts or null) as neutral parts; images are numbered as they come."""
    if content is None:
        return []
    if isinstance(content, str):
        budget.text(len(content), where)
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RequestError(f"{where}: content must be a string, a list of parts or null")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{at}: a text part needs a string 'text'")
            budget.text(len(text), at)
            parts.append({"type": "text", "text": text})
        elif kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
            view = len(budget.images) + 1
            if view > budget.limits.max_images:
                limit = budget.limits.max_images
                raise RequestError(f"{at}: over the limit of {limit} images per request", 413, code="too_many_images")
            budget.images[view] = _decode_image(url, at, budget)
            parts.append({"type": "image", "view": view})
        else:
            raise RequestError(f"{at}: unsupported content part type {kind!r} (use 'text' or 'image_url')")
    return parts


def conversation_from_request(body: Any, limits: Limits = Limits()) -> tuple[Conversation, Sampling]:
    """The neutral conversation and sampling settings of a chat-completions request body.

    Raises ``RequestError`` (one line) for anything malformed, unsupported or over ``limits``.
    """
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError("'messages' must be a non-empty list")
    if len(raw_messages) > limits.max_messages:
        raise RequestError(
            f"{len(raw_messages)} messages, over the limit of {limits.max_messages}", 413, code="too_many_messages"
        )
    budget = _Budget(limits)
    messages: list[Message] = []
    for i, raw in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(raw, Mapping):
            raise RequestError(f"{where}: each message must be an object")
        role = raw.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}: unknown role {role!r} (use one of {', '.join(ROLES)})")
        message: Message = {
            "role": "system" if role == "developer" else role,
            "content": _content(raw.get("content"), where, budget),
        }
        if role == "tool":
            message["tool_call_id"] = str(raw.get("tool_call_id") or "")
        if role == "assistant" and raw.get("tool_calls"):
            calls = raw["tool_calls"]
            if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
                raise RequestError(f"{where}: tool_calls must be a list of objects")
            encoded = json.dumps(calls)
            budget.text(len(encoded), f"{where}.tool_calls")
            message["tool_calls"] = json.loads(encoded)
        messages.append(message)
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools)):
        raise RequestError("'tools' must be a list of objects")
    if tools:
        budget.text(len(json.dumps(tools)), "tools")
    if body.get("tool_choice") == "none":
        tools = None
    conversation = Conversation(id=uuid.uuid4().hex, messages=messages, images=budget.images, tools=tools or None)
    return conversation, _sampling(body, limits.max_tokens)


def _number(body: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"'{key}' must be a number in [{low:g}, {high:g}]")
    return float(value)


def _sampling(body: Mapping[str, Any], cap: int = Limits.max_tokens) -> Sampling:
    defaults = Sampling()
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(defaults.max_new_tokens, cap)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError("'max_tokens' must be a positive integer")
    if max_tokens > cap:
        raise RequestError(f"'max_tokens' is {max_tokens}, over this server's limit of {cap}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError("'seed' must be an integer")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise RequestError("'stop' must be a string or a list of strings")
    return Sampling(
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", defaults.temperature, 0.0, 2.0),
        top_p=_number(body, "top_p", defaults.top_p, 0.0, 1.0),
        seed=seed,
        stop=stops,
    )


def _seeded(sampling: Sampling, row: int) -> Sampling:
    """The sampling of completion ``row`` of ``n``: seed + row, so the samples differ yet stay reproducible."""
    return sampling if sampling.seed is None or row == 0 else replace(sampling, seed=sampling.seed + row)


def _failure_line(error: BaseException) -> str:
    """A generation failure in one line (a policy bug is logged with its traceback too)."""
    if isinstance(error, BackendError):
        return str(error) or "the model backend failed"
    log.error("policy failed", exc_info=error)
    return f"{type(error).__name__}: {error}"


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    line = " ".join(message.split())
    body = {"error": {"message": line, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) from its Content-Length or as soon as streamed bytes pass ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError("invalid Content-Length header")
        if int(declared) > limit:
            raise RequestError(
                f"the request body is {int(declared)} bytes, over the limit of {limit}", 413, code="body_too_large"
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # a chunked body (or one longer than it declared): stop reading here
            raise RequestError(f"the request body is over the limit of {limit} bytes", 413, code="body_too_large")
    return bytes(body)


def create_app(
    policy: Policy,
    model_name: str,
    *,
    concurrency: int = 1,
    sessions: int = 8,
    limits: Limits | None = None,
    max_batch: int = 16,
    batch_window: float = 0.05,
) -> FastAPI:
    """A FastAPI app serving ``policy`` as the model ``model_name``.

    ``concurrency`` is how many batches may run at once (each in a worker thread).
    ``sessions`` is how many finished conversations keep their backend cache for a next turn (0: none).
    ``limits`` bounds each request (default ``Limits()``).
    ``max_batch`` is the most completions decoded together (1: one request at a time);
    ``batch_window`` the longest a ``generate_batch`` call waits for more requests (seconds; see
    ``server_batching``; a running batch admits requests at every decode step and never waits).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    bounds = limits if limits is not None else Limits()
    recent = Sessions(policy, capacity=sessions)
    app = FastAPI(title="sketchmind", description=f"OpenAI-compatible server for {model_name}")
    app.state.policy = policy
    app.state.model_name = model_name
    app.state.limits = bounds
    # Continuous batching where the backend keeps a running batch (HF checkpoints), else batched calls.
    make_running = getattr(policy, "running_batch", None)
    running = make_running() if callable(make_running) and max_batch > 1 else None
    batcher: Batcher | ContinuousBatcher = (
        ContinuousBatcher(running, max_batch=max_batch)
        if running is not None
        else Batcher(policy, slots=concurrency, max_batch=max_batch, window=batch_window)
    )
    app.state.batcher = batcher
    batching_backend = type(policy).generate_batch is not Policy.generate_batch
    created = int(time.time())

    def generate(
        conversation: Conversation,
        sampling: Sampling,
        settings: Settings,
        on_text: Callable[[str], None] | None = None,
    ) -> list[Generation]:
        """``settings.n`` completions, batched with other requests where the batcher may; the first continues
        (and keeps) the matched session.

        With ``on_text`` (streaming one completion) the policy reports its text as it grows.
        """
        session, digests = recent.checkout(conversation)
        extra = [uuid.uuid4().hex for _ in range(settings.n - 1)]  # samples 2..n: fresh caches, freed after
        copies = [with_id(conversation, conversation_id) for conversation_id in (session, *extra)]

        def alone() -> list[Generation]:
            if on_text is not None and not extra:
                return [policy.generate_stream(copies[0], sampling, on_text)]
            if extra and batching_backend:
                return policy.generate_batch(copies, sampling)  # a batching backend: seed + i per row
            # one by one, with the seeds a batching backend would give each row
            return [policy.generate(copy, _seeded(sampling, i)) for i, copy in enumerate(copies)]

        # A seeded sample must not depend on its row in someone else's batch (row i samples with seed + i);
        # greedy decoding reads no seed.
        unseeded = sampling.seed is None or sampling.temperature <= 0
        try:
            if isinstance(batcher, ContinuousBatcher):  # a token stream is a row like any other
                generations = batcher.run(copies, sampling, alone, unseeded, None if extra else on_text)
            else:  # generate_stream reports one row's text: a token stream runs alone
                generations = batcher.run(copies, sampling, alone, batching_backend and on_text is None and unseeded)
        except BaseException:
            recent.discard(session)
            raise
        finally:
            for conversation_id in extra:
                policy.release(conversation_id)
        recent.checkin(session, digests)
        return generations

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return _error(error.status_code, str(error.detail), kind)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        """How requests were batched so far: batches (model calls), requests, rows, the largest batch."""
        return {"batching": batcher.stats()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "sketchmind"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            raw = await _read_body(request, bounds.max_body_bytes)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise RequestError("the request body is not valid JSON") from None
            if not isinstance(body, Mapping):
                raise RequestError("the request body must be a JSON object")
            try:
                settings = check_parameters(body, bounds.max_n)
            except ParameterError as error:
                raise RequestError(str(error)) from None
            if body["model"] != model_name:
                raise RequestError(
                    f"model {body['model']!r} is not served here (this server serves {model_name!r})",
                    404,
                    "not_found_error",
                )
            # Decoding the images is CPU work: keep it off the event loop.
            conversation, sampling = await run_in_threadpool(conversation_from_request, body, bounds)
        except RequestError as error:
            return _error(error.status, str(error), error.kind, error.code)

        if settings.stream:
            chunks = Chunks(model_name, settings.include_usage)
            incremental = settings.n == 1 and not conversation.tools  # tool calls must arrive whole

            def run(on_text: Callable[[str], None] | None) -> list[Generation]:
                return generate(conversation, sampling, settings, on_text)

            events = stream_reply(run, chunks, sampling, conversation.tools, incremental, _failure_line)
            return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        try:
            generations = await run_in_threadpool(generate, conversation, sampling, settings)
        except BackendError as error:
            return _error(500, str(error) or "the model backend failed", "server_error")
        except Exception as error:  # the policy's bug, reported in one line; the traceback goes to the log
            log.exception("policy %s failed", getattr(policy, "name", type(policy).__name__))
            return _error(500, f"{type(error).__name__}: {error}", "server_error")
        logprobs = bool(body.get("logprobs"))
        return JSONResponse(completion_response(generations, model_name, sampling, logprobs, conversation.tools))

    return app


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to any interface
        return False


def warn_if_exposed(host: str, what: str = "the server", stream: TextIO | None = None) -> bool:
    """Print one warning line on stderr when ``host`` is not loopback (our servers have no authentication)."""
    if is_loopback(host):
        return False
    print(
        f"sketchmind: warning: {what} listens on {host}, reachable from other machines, and has no "
        "authentication; bind 127.0.0.1 unless this network is trusted",
        file=stream if stream is not None else sys.stderr,
        flush=True,
    )
    return True


def serve(
    policy: Policy,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    concurrency: int = 1,
    sessions: int = 8,
    limits: Limits | None = None,
    max_batch: int = 16,
) -> None:
    """Serve ``policy`` at ``http://HOST:PORT/v1`` until interrupted (Ctrl-C)."""
    import uvicorn

    app = create_app(policy, model_name, concurrency=concurrency, sessions=sessions, limits=limits, max_batch=max_batch)
    warn_if_exposed(host)
    uvicorn.run(app, host=host, port=port, log_level="info")
