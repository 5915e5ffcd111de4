"""A stage's running time over all its runs, killed ones included: ``clock.json`` in the stage's folder.

The pipeline wraps each stage in a ``StageClock``; its ``seconds()`` and ``segments`` (the runs it took) go into
the stage's ``done.json``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

from sketchmind.files import write_json_atomic

CLOCK_FILE = "clock.json"  # a running stage's seconds so far, over all its runs (a killed one's included)
CLOCK_BEAT = 1.0  # seconds between two clock.json writes: a killed run's time is counted to within a beat


class StageClock:
    """The seconds a stage has run over all its runs, killed ones included (to within ``CLOCK_BEAT``).

    While a stage runs, a background thread rewrites ``clock.json`` in its folder every beat with the
    seconds so far; a resumed stage starts counting from what its killed run last wrote.
    """

    def __init__(self, folder: Path, beat: float = CLOCK_BEAT) -> None:
        self.path = folder / CLOCK_FILE
        self.beat = beat
        self.before = 0.0
        self.segments = 1
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="sketchmind-stage-clock", daemon=True)

    def seconds(self) -> float:
        """Seconds over every run of this stage, this one so far included."""
        return self.before + time.perf_counter() - self._started

    def __enter__(self) -> StageClock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            earlier = json.loads(self.path.read_text(encoding="utf-8"))
            self.before, self.segments = float(earlier["seconds"]), int(earlier["segments"]) + 1
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the first run of this stage (or a clock it cannot read: start at zero)
        self._started = time.perf_counter()
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.path.unlink(missing_ok=True)  # done.json holds the total now
        else:
            self._write()  # a failed run's time counts when the stage is run again

    def _write(self) -> None:
        write_json_atomic(self.path, {"seconds": round(self.seconds(), 3), "segments": self.segments})

    def _tick(self) -> None:
        while not self._stop.wait(self.beat):
            # A full disk fails the stage's own writes, with a clear error; the clock stays quiet.
            with contextlib.suppress(OSError):
                self._write()
