"""Whether to ask the Hugging Face hub at all: a hub id that cannot be fetched fails in seconds, not minutes.

Without this, ``from_pretrained`` on a machine with no network retries every file with backoff (five
tries per file, over two minutes, a log line each) before saying it could not connect. Here the hub
is probed once with a short TCP connect (to the proxy, when one is configured); when it cannot be
reached, or ``HF_HUB_OFFLINE`` is set, loading uses the local cache only (``local_files_only``), which
either finds the model at once or fails at once.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

PROBE_SECONDS = 3.0  # a reachable hub answers a TCP connect in well under a second


def offline() -> bool:
    """Whether the hub is switched off by configuration (``HF_HUB_OFFLINE`` or huggingface_hub's constant)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    """The hub's URL (``HF_ENDPOINT`` or huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _address(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def reachable(url: str | None = None, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy in between) opens within ``timeout`` seconds.

    The connect runs in a daemon thread because name resolution ignores socket timeouts: a hung DNS
    lookup must not hang the caller either.
    """
    target = url or endpoint()
    proxy = urllib.request.getproxies().get(urlsplit(target).scheme or "https")
    address = _address(proxy or target)
    if address is None:
        return False
    opened = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                opened.set()
        except OSError:
            pass

    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return opened.is_set()


def local_files_only(source: str) -> bool:
    """Whether loading ``source`` must not touch the network: a local folder, or an offline or unreachable hub."""
    if Path(source).expanduser().exists():
        return True
    return offline() or not reachable()
