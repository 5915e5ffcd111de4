"""Servers on loopback for tests: a free port, a uvicorn app in a thread, the demo, a recording policy."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from sketchmind.models.base import Conversation, Generation, Policy, Sampling


def free_port() -> int:
    """A loopback port nobody listens on (nothing guards it after return: use it at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """An app served by uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass  # it accepts
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()


class Recording(Policy):
    """A real policy that forwards to another and keeps every conversation it was asked about."""

    def __init__(self, inner: Policy, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.seen: list[Conversation] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        with self._lock:
            self.seen.append(conversation)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            return self.inner.generate(conversation, sampling)
        finally:
            with self._lock:
                self.in_flight -= 1

    @property
    def images_per_request(self) -> list[int]:
        return [len(c.images) for c in self.seen]


@contextmanager
def served_demo(default_model: str = "expert") -> Iterator[str]:
    """The Gradio demo launched in-process on a free loopback port: its URL."""
    from sketchmind.demo import MAX_FILE_SIZE, build_app

    app = build_app(default_model=default_model)
    port = free_port()
    app.queue().launch(
        prevent_thread_lock=True, server_port=port, server_name="127.0.0.1", max_file_size=MAX_FILE_SIZE, quiet=True
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
