"""What the benchmark tools report about the machine they ran on."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
