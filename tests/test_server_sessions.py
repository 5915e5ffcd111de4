"""The server's session map: prefix matching, exclusive checkout, eviction that frees backend caches."""

from __future__ import annotations

import numpy as np

from sketchmind.models.base import Conversation, Generation, Policy, Sampling
from sketchmind.server_sessions import Sessions, message_digests


class Releases(Policy):
    def __init__(self) -> None:
        self.released: list[str] = []

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        return Generation(text="ok")

    def release(self, conversation_id: str) -> None:
        self.released.append(conversation_id)


def _conversation(*texts: str, pixel: int = 0) -> Conversation:
    image = np.full((4, 4, 3), pixel, np.uint8)
    first = {"role": "user", "content": [{"type": "image", "view": 1}, {"type": "text", "text": texts[0]}]}
    rest = [
        {"role": "assistant" if i % 2 == 0 else "user", "content": [{"type": "text", "text": t}]}
        for i, t in enumerate(texts[1:])
    ]
    return Conversation("request", [first, *rest], images={1: image})


def test_a_longer_conversation_reuses_the_session_of_its_prefix() -> None:
    sessions = Sessions(Releases())
    first, digests = sessions.checkout(_conversation("q"))
    sessions.checkin(first, digests)
    again, _ = sessions.checkout(_conversation("q", "a1", "q2"))
    assert again == first


def test_a_different_image_or_text_starts_a_new_session() -> None:
    sessions = Sessions(Releases())
    first, digests = sessions.checkout(_conversation("q"))
    sessions.checkin(first, digests)
    assert sessions.checkout(_conversation("q", "a1", "q2", pixel=9))[0] != first
    assert sessions.checkout(_conversation("other", "a1", "q2"))[0] != first
    assert sessions.checkout(_conversation("q"))[0] != first  # the same request again is not an extension


def test_concurrent_extensions_never_share_a_session() -> None:
    sessions = Sessions(Releases())
    first, digests = sessions.checkout(_conversation("q"))
    sessions.checkin(first, digests)
    one, _ = sessions.checkout(_conversation("q", "a1", "q2"))
    two, _ = sessions.checkout(_conversation("q", "a1", "q2"))
    assert one == first and two != first


def test_eviction_and_failures_release_backend_caches() -> None:
    policy = Releases()
    sessions = Sessions(policy, capacity=2)
    ids = []
    for text in ("a", "b", "c"):
        session, digests = sessions.checkout(_conversation(text))
        sessions.checkin(session, digests)
        ids.append(session)
    assert policy.released == [ids[0]] and len(sessions) == 2
    failed, _ = sessions.checkout(_conversation("d"))
    sessions.discard(failed)
    assert policy.released == [ids[0], failed]


def test_digests_cover_roles_text_images_and_tool_calls() -> None:
    base = _conversation("q", "a")
    called = _conversation("q", "a")
    called.messages[1]["tool_calls"] = [{"function": {"name": "box", "arguments": "{}"}}]
    assert message_digests(base)[0] == message_digests(called)[0]
    assert message_digests(base)[1] != message_digests(called)[1]
    assert message_digests(base)[0] != message_digests(_conversation("q", pixel=1))[0]


class Forks(Releases):
    def __init__(self) -> None:
        super().__init__()
        self.forks: list[tuple[str, str]] = []

    def fork(self, source_id: str, target_id: str) -> None:
        self.forks.append((source_id, target_id))


def test_the_same_messages_again_fork_the_recent_session_which_stays_free() -> None:
    policy = Forks()
    sessions = Sessions(policy)
    first, digests = sessions.checkout(_conversation("q"))
    sessions.checkin(first, digests)
    one, _ = sessions.checkout(_conversation("q"))
    two, _ = sessions.checkout(_conversation("q"))  # concurrent with one: forks the same recent session
    assert len({first, one, two}) == 3 and policy.forks == [(first, one), (first, two)]
    assert sessions.checkout(_conversation("q", "a1", "q2"))[0] == first  # still free to be extended
    assert sessions.checkout(_conversation("other"))[0] not in {first, one, two} and len(policy.forks) == 2
