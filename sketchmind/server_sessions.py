"""Cross-request cache reuse for the HTTP server: map each request to a backend conversation id.

An OpenAI client resends the whole conversation every turn. If a recent request's messages are a
prefix of this one's, the backend's state for that request (the HF KV cache) already covers most of
the prompt, so this request reuses its conversation id. A session is checked out while a request
uses it, so two concurrent requests that extend the same conversation never share one cache: the
second simply starts fresh. A request whose messages are the same as a recent request's (a retry, or
many clients sending one prompt, as ``OpenAIPolicy.generate_batch`` does for rollouts) gets a new id
that starts from that request's state (``Policy.fork``), so it prefills next to nothing and the recent
session stays free for the next such request. The match is only a hint: ``HFPolicy`` still checks that
the rendered text and images extend what it cached before reusing anything, so a wrong guess costs a
full prefill, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence

from sketchmind.models.base import Conversation, Policy


def message_digests(conversation: Conversation) -> list[str]:
    """One digest per message: role, text, image pixels and tool calls."""
    digests = []
    for message in conversation.messages:
        h = hashlib.blake2b(digest_size=16)
        h.update(str(message.get("role")).encode())
        for part in message.get("content") or []:
            if part.get("type") == "image":
                image = conversation.images[part["view"]]
                h.update(b"\0image" + str(image.shape).encode() + image.tobytes())
            else:
                h.update(b"\0text" + str(part.get("text", "")).encode())
        if message.get("tool_calls"):
            h.update(json.dumps(message["tool_calls"], sort_keys=True).encode())
        digests.append(h.hexdigest())
    return digests


class Sessions:
    """The most recent ``capacity`` conversations, by the digests of the messages they were asked with.

    Args:
        policy: the served policy; evicted sessions are released so their caches are freed.
        capacity: how many idle sessions to keep (each may hold a KV cache in accelerator memory).
    """

    def __init__(self, policy: Policy, capacity: int = 8) -> None:
        self.policy = policy
        self.capacity = capacity
        self._idle: OrderedDict[str, list[str]] = OrderedDict()  # id -> digests, least recent first
        self._lock = threading.Lock()

    def checkout(self, conversation: Conversation) -> tuple[str, list[str]]:
        """The id to answer ``conversation`` under (a reusable session or a new one) and its digests."""
        digests = message_digests(conversation)
        with self._lock:
            best, best_length = None, 0
            for session, known in self._idle.items():
                if best_length < len(known) < len(digests) and digests[: len(known)] == known:
                    best, best_length = session, len(known)
            if best is not None:
                del self._idle[best]  # in use: no other request can take it until checkin
                return best, digests
            same = next((session for session, known in reversed(self._idle.items()) if known == digests), None)
            fresh = uuid.uuid4().hex
            if same is not None:  # under the lock: an eviction cannot release it meanwhile
                self.policy.fork(same, fresh)
        return fresh, digests

    def checkin(self, session: str, digests: Sequence[str]) -> None:
        """The request finished: keep its session for the next turn, evicting the oldest."""
        evicted: list[str] = []
        with self._lock:
            self._idle[session] = list(digests)
            while len(self._idle) > self.capacity:
                evicted.append(self._idle.popitem(last=False)[0])
        for old in evicted:
            self.policy.release(old)

    def discard(self, session: str) -> None:
        """The request failed: drop the session and its cache."""
        self.policy.release(session)

    def __len__(self) -> int:
        return len(self._idle)


def with_id(conversation: Conversation, session: str) -> Conversation:
    """The same conversation under another id."""
    return Conversation(session, conversation.messages, conversation.images, conversation.tools)
