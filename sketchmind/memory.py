"""Keep freed image buffers for reuse, so a new view does not pay for fresh pages.

A 1024x1024 view is a 3 MB buffer. glibc serves such sizes with fresh ``mmap`` pages by default, and
touching 768 fresh pages costs ~1.6 ms: more than drawing the mark. Raising the mmap and trim
thresholds lets freed views' memory serve the next ones (0.4 ms per view instead of ~2 ms, see
``make bench``). Kept memory is kept per malloc arena, and glibc gives each busy thread its own (up to 8
per core), so a server's thread pool would slowly fill a heap per thread: the arenas are capped too
(16 clients on ``sketchmind serve`` for 5 minutes: +27 MiB of RSS with glibc's default, +2 MiB with 2
arenas, and no slower). It changes a process-wide setting, so only entry points (the CLI, a server) call it,
never ``import sketchmind``.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (has ``mallopt`` and ``malloc_trim``), else ``None``."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library to load
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # ctypes would silently truncate a big int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def reuse_freed_memory(max_buffer: int = 32 << 20, arenas: int = 2) -> bool:
    """Serve buffers up to ``max_buffer`` bytes from the heap and keep freed memory, in at most ``arenas``
    malloc arenas (call it before starting threads: arenas made earlier stay). False if not glibc."""
    libc = glibc()
    if libc is None:
        return False
    libc.mallopt(M_ARENA_MAX, arenas)
    libc.mallopt(M_MMAP_THRESHOLD, max_buffer)
    libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    return True
