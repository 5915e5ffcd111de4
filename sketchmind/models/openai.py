"""A policy behind any OpenAI-compatible chat endpoint: the OpenAI API, vLLM, SGLang, Ollama, or ``sketchmind.server``.

Neutral messages (``protocols.base``) become OpenAI chat messages: image parts are sent as PNG data
URLs, encoded once per (conversation id, view) and cached until ``release``; tool messages carry
text only (vLLM and the OpenAI API reject images there), so any image parts in them move to the next
user message; ``Conversation.tools`` goes out as the native ``tools=`` parameter.

Retries are our own loop, not the client's (the client is built with ``max_retries=0``), so that one
``generate`` call never outlives its time budget and the final error can say how many retries it
took. Connection failures (refused, reset, dropped), timeouts, 408, 429 and 5xx answers are retried
with exponential backoff and jitter: ``backoff * 2**k`` seconds (capped at 8 s) times a random factor
in [0.5, 1], or the server's ``Retry-After`` when it sends one (capped at 30 s). The whole call,
retries included, is bounded by ``timeout`` (or ``Sampling.timeout``): each attempt gets the time
that is left (at most ``attempt_timeout``, so one stalled answer can be retried within the budget), and
no retry is scheduled whose wait would pass the deadline. Other 4xx answers (and
answers that are not chat completions) fail at once.
Every failure surfaces as a ``BackendError`` with one line, e.g. ``cannot reach
http://127.0.0.1:9/v1 (connection refused) after 3 retries``.

``openai`` is imported inside the constructor, so ``import sketchmind`` stays light.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.protocols.base import Message

if TYPE_CHECKING:
    from openai import OpenAI
    from openai.types.chat import ChatCompletion

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_BACKOFF = 8.0  # seconds between two attempts, at most
MAX_RETRY_AFTER = 30.0  # the longest server-requested wait we honour
RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
PNG_COMPRESSION = 1  # fast: the images are small, the encoding happens once per view


def png_data_url(image: np.ndarray) -> str:
    """An RGB (or grayscale) uint8 image as a ``data:image/png;base64,...`` URL."""
    pixels = np.ascontiguousarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise BackendError(f"could not encode an image of shape {image.shape} as PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _parts(message: Message) -> list[dict[str, Any]]:
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p if isinstance(p, dict) else {"type": "text", "text": str(p)} for p in content]


def _text(parts: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def _tool_calls(calls: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI-shaped tool calls from OpenAI-shaped or neutral (``{"name", "arguments"}``) dicts."""
    out: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        function = call.get("function") or call
        arguments = function.get("arguments", {})
        out.append(
            {
                "id": call.get("id") or f"call_{i}",
                "type": "function",
                "function": {
                    "name": str(function.get("name", "")),
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return out


def to_openai_messages(messages: Sequence[Message], image_url: Callable[[int], str]) -> list[dict[str, Any]]:
    """Translate neutral messages to OpenAI chat messages; ``image_url(view)`` gives each view's URL.

    Tool messages keep their ``tool_call_id`` and text only. Image parts found in a run of tool
    messages are moved to the user message that follows the run (prepended), or to a new user
    message right after it, so the assistant's tool calls are still answered contiguously.
    """
    out: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []  # image parts lifted out of the current run of tool messages

    def user_content(parts: Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
        converted: list[dict[str, Any]] = []
        for part in parts:
            if part.get("type") == "image":
                converted.append({"type": "image_url", "image_url": {"url": image_url(int(part["view"]))}})
            elif part.get("type") == "text":
                converted.append({"type": "text", "text": str(part.get("text", ""))})
        if len(converted) == 1 and converted[0]["type"] == "text":
            return str(converted[0]["text"])
        return converted

    for message in messages:
        role = message.get("role")
        parts = _parts(message)
        if role != "tool" and moved:
            if role == "user":
                parts = [*moved, *parts]
            else:
                out.append({"role": "user", "content": user_content(moved)})
            moved = []
        if role == "tool":
            moved.extend(p for p in parts if p.get("type") == "image")
            out.append(
                {"role": "tool", "tool_call_id": str(message.get("tool_call_id") or ""), "content": _text(parts)}
            )
        elif role == "user":
            out.append({"role": "user", "content": user_content(parts)})
        elif role == "assistant":
            converted: dict[str, Any] = {"role": "assistant", "content": _text(parts)}
            if message.get("tool_calls"):
                converted["tool_calls"] = _tool_calls(message["tool_calls"])
            out.append(converted)
        else:  # system (and anything else a caller put there) is text
            out.append({"role": str(role or "system"), "content": _text(parts)})
    if moved:
        out.append({"role": "user", "content": user_content(moved)})
    return out


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _root_reason(error: BaseException) -> str:
    """The innermost cause of a transport error, in words: ``connection refused``."""
    seen: set[int] = set()
    current: BaseException | None = error
    deepest = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        deepest = current
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        current = current.__cause__ or current.__context__
    text = _one_line(str(deepest)) or type(deepest).__name__
    if len(text) > 1 and text[0].isupper() and text[1].islower():  # "Server disconnected" -> "server ...", not "sSL"
        text = text[0].lower() + text[1:]
    return text


def _retries(n: int) -> str:
    return "" if n == 0 else f" after {n} retr{'y' if n == 1 else 'ies'}"


class OpenAIPolicy(Policy):
    """A model served behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        model: the model name the server knows (``gpt-4o``, ``Qwen/Qwen2.5-VL-7B-Instruct`` ...).
        base_url: e.g. ``http://127.0.0.1:8000/v1``; default ``OPENAI_BASE_URL``, else the OpenAI API.
        api_key: default ``OPENAI_API_KEY``, else ``"EMPTY"`` (what local servers accept).
        timeout: seconds one ``generate`` may take, retries included (``Sampling.timeout`` overrides).
        max_retries: retries after the first attempt on connection errors, timeouts, 408, 429 and 5xx.
        concurrency: requests in flight at once in ``generate_batch``.
        logprobs: ask for token log-probabilities and report their sum as ``Generation.logprob``.
        backoff: the first retry's delay in seconds (doubling each retry, jittered, capped at 8 s).
        attempt_timeout: seconds one HTTP attempt may take before it is abandoned and retried (default:
            all the time left, so a stalled answer uses the whole budget and is not retried).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60,
        max_retries: int = 3,
        concurrency: int = 8,
        logprobs: bool = False,
        backoff: float = 0.5,
        attempt_timeout: float | None = None,
    ) -> None:
        if timeout <= 0 or (attempt_timeout is not None and attempt_timeout <= 0):
            raise ValueError(f"timeout and attempt_timeout must be positive, not {timeout}, {attempt_timeout}")
        if max_retries < 0 or concurrency < 1 or backoff < 0:
            raise ValueError("max_retries and backoff must be >= 0 and concurrency >= 1")
        import openai

        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.logprobs = logprobs
        self.backoff = backoff
        self.attempt_timeout = attempt_timeout
        self.images_encoded = 0  # views encoded so far (each once per conversation)
        self.requests_sent = 0  # HTTP attempts, retries included
        self._client: OpenAI = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=self.timeout,
            max_retries=0,  # our loop retries: it keeps the total under the budget and counts retries
        )
        self._urls: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ Policy

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        started = time.perf_counter()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(conversation.messages, lambda view: self._image_url(conversation, view)),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
        }
        if sampling.seed is not None:
            request["seed"] = sampling.seed
        if sampling.stop:
            request["stop"] = list(sampling.stop)
        if conversation.tools:
            request["tools"] = [dict(tool) for tool in conversation.tools]
        if self.logprobs:
            request["logprobs"] = True
        completion = self._create(request, sampling.timeout or self.timeout)
        choices = getattr(completion, "choices", None)  # a non-JSON 200 comes back as a plain string
        if not choices:
            raise BackendError(f"{self.base_url} answered without choices (is it an OpenAI-compatible /v1 endpoint?)")
        choice = choices[0]
        text = choice.message.content or ""
        calls: list[dict[str, Any]] = []
        for call in choice.message.tool_calls or []:
            function = getattr(call, "function", None)  # custom (non-function) tool calls are not ours
            if function is not None:
                calls.append(
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": function.name, "arguments": function.arguments},
                    }
                )
        logprob = None
        if choice.logprobs is not None and choice.logprobs.content:
            logprob = float(sum(token.logprob for token in choice.logprobs.content))
        usage = completion.usage
        return Generation(
            text=text,
            message={"content": text, "tool_calls": calls} if calls else None,
            tokens_in=usage.prompt_tokens if usage else None,
            tokens_out=usage.completion_tokens if usage else None,
            context=usage.prompt_tokens + usage.completion_tokens if usage else None,
            logprob=logprob,
            seconds=time.perf_counter() - started,
        )

    def generate_batch(
        self, conversations: Sequence[Conversation], sampling: Sampling = Sampling()
    ) -> list[Generation]:
        """One turn per conversation, ``concurrency`` requests at a time; results in input order."""
        if len(conversations) <= 1 or self.concurrency == 1:
            return [self.generate(c, sampling) for c in conversations]
        workers = min(self.concurrency, len(conversations))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sketchmind-openai") as pool:
            futures = [pool.submit(self.generate, c, sampling) for c in conversations]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def release(self, conversation_id: str) -> None:
        with self._lock:
            for key in [k for k in self._urls if k[0] == conversation_id]:
                del self._urls[key]

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # ------------------------------------------------------------------ internals

    def _image_url(self, conversation: Conversation, view: int) -> str:
        key = (conversation.id, view)
        with self._lock:
            cached = self._urls.get(key)
        if cached is not None:
            return cached
        image = conversation.images.get(view)
        if image is None:
            raise BackendError(f"a message shows view {view}, which the conversation has no image for")
        url = png_data_url(image)
        with self._lock:
            self._urls[key] = url
            self.images_encoded += 1
        return url

    def _create(self, request: dict[str, Any], budget: float) -> ChatCompletion:
        """One chat completion, retried as the module docstring says, within ``budget`` seconds."""
        import openai

        deadline = time.monotonic() + budget
        retries = 0
        while True:
            remaining = deadline - time.monotonic()
            attempt = remaining if self.attempt_timeout is None else min(remaining, self.attempt_timeout)
            wait: float | None = None
            timed_out = False
            cause: Exception | None = None  # the last failure, kept as the BackendError's cause for debugging
            try:
                with self._lock:
                    self.requests_sent += 1
                completion: ChatCompletion = self._client.chat.completions.create(**request, timeout=max(attempt, 0.01))
                return completion
            except openai.APITimeoutError as error:
                cause = error
                # Abandoned before the budget's end: another attempt may still fit in the time left.
                timed_out = attempt >= remaining
                failure = f"no answer from {self.base_url} within {budget if timed_out else attempt:g} s"
            except openai.APIConnectionError as error:
                cause = error
                failure = f"cannot reach {self.base_url} ({_root_reason(error)})"
            except openai.APIStatusError as error:
                cause = error
                status = error.status_code
                detail = _status_detail(error)
                if status not in RETRY_STATUSES and status < 500:
                    hint = " (check OPENAI_API_KEY)" if status in (401, 403) else ""
                    raise BackendError(
                        f"{self.base_url} rejected the request ({status}: {detail}){hint}{_retries(retries)}"
                    ) from error
                failure = f"{self.base_url} answered {status} ({detail})"
                wait = _retry_after(error.response.headers)
            except openai.OpenAIError as error:  # e.g. a 200 whose body is not a chat completion
                raise BackendError(f"{self.base_url} sent an unusable answer ({_one_line(str(error))})") from error
            if retries >= self.max_retries:
                raise BackendError(failure + _retries(retries)) from cause
            delay = wait if wait is not None else min(self.backoff * 2**retries, MAX_BACKOFF) * random.uniform(0.5, 1)
            if time.monotonic() + delay >= deadline:
                if timed_out:  # that attempt had all the time left: nothing more to say
                    raise BackendError(failure + _retries(retries)) from cause
                raise BackendError(
                    f"{failure}{_retries(retries)}; no time left for more retries ({budget:g} s budget)"
                ) from cause
            time.sleep(delay)
            retries += 1


def _status_detail(error: Any) -> str:
    """The server's own error message, one line."""
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, Mapping) else inner
        if message:
            return _one_line(str(message))
    try:
        text = str(error.response.text)
    except Exception:  # a streamed or unreadable body: the client's message will do
        text = ""
    return _one_line(text or str(getattr(error, "message", "")) or "no details")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after-ms")
    scale = 1000.0
    if raw is None:
        raw, scale = headers.get("retry-after"), 1.0
    try:
        seconds = float(raw) / scale if raw is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return None if seconds is None or seconds < 0 else min(seconds, MAX_RETRY_AFTER)
