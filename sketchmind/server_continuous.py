"""Continuous batching for ``sketchmind serve``: waiting requests join the running batch between decode steps.

``server_batching.Batcher`` batches whole ``generate_batch`` calls, so a request that arrives while a batch
decodes waits for its longest row. With a backend that keeps a running batch (``HFPolicy.running_batch``,
``models/hf_running.py``) this ``ContinuousBatcher`` schedules per decode step instead, as vLLM does: one
driver thread owns the model and loops

1. admit every waiting request that fits (oldest first, up to ``max_batch`` rows in the batch; a request
   bigger than that joins an empty batch): one prefill forward for all of them, their rows then decode
   with the rows already running;
2. decode one token for every row; a request whose rows have all finished is answered at once.

The driver starts with a request and ends when nothing runs or waits, so an idle server holds no thread.

Which requests join (``run``'s ``batchable``, decided by the server): greedy ones and unseeded samples,
token streams included (each row reports its own text, so a stream no longer runs alone). A seeded sample
runs by itself (``alone()``), between two decode steps while the batch waits: its draws must not depend on
the float rounding of the rows it happens to share a batch with.

Failures stay with their request where the cause is known: a request the backend cannot plan fails alone,
and a joint prefill that fails is retried request by request. A failed decode step (out of memory, say)
fails the requests in the batch, which then starts empty.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sketchmind.models.base import Conversation, Generation, Sampling
from sketchmind.models.hf_running import Request, RunningBatch

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    """A caller's request and, for a request that runs by itself, how to run it."""

    request: Request
    alone: Callable[[], list[Generation]] | None
    done: bool = False


@dataclass
class ContinuousStats:
    """What the driver has done so far (``GET /stats``)."""

    batches: int = 0  # admissions: prefill forwards that added requests to the batch, plus requests run alone
    requests: int = 0
    rows: int = 0
    largest: int = 0  # most requests in the batch at once
    batched_calls: int = 0  # admissions of several requests, or into a batch that was already decoding
    joined: int = 0  # requests that joined rows already decoding
    retried: int = 0  # joint prefills that failed and were retried request by request
    steps: int = 0  # decode steps
    row_steps: int = 0  # rows decoded, summed over the steps

    def as_dict(self) -> dict[str, float]:
        """JSON-ready, with the mean requests per admission and the mean rows per decode step."""
        return {
            **vars(self),
            "mean_requests": self.requests / self.batches if self.batches else 0.0,
            "mean_rows": self.row_steps / self.steps if self.steps else 0.0,
        }


class ContinuousBatcher:
    """Runs the server's generation requests through one running batch (``RunningBatch``).

    Args:
        running: the policy's running batch (``policy.running_batch()``).
        max_batch: the most rows decoding at once.
    """

    def __init__(self, running: RunningBatch, *, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.running = running
        self.max_batch = max_batch
        self._queue: deque[_Job] = deque()
        self._jobs: dict[Request, _Job] = {}  # admitted requests, until they are done
        self._cond = threading.Condition()
        self._driving = False
        self._stats = ContinuousStats()

    def run(
        self,
        conversations: Sequence[Conversation],
        sampling: Sampling,
        alone: Callable[[], list[Generation]],
        batchable: bool,
        on_text: Callable[[str], None] | None = None,
    ) -> list[Generation]:
        """The generations of one request's ``conversations``, in order; blocks until they are done.

        With ``batchable`` the rows join the running batch (``on_text``, for a one-row token stream, is
        called with the row's text after each token); otherwise ``alone()`` runs the request by itself.
        The request's own error is raised here, in its caller's thread.
        """
        job = _Job(Request(list(conversations), sampling, on_text), None if batchable else alone)
        with self._cond:
            self._queue.append(job)
            if not self._driving:
                self._driving = True
                threading.Thread(target=self._drive, name="sketchmind-batch", daemon=True).start()
            while not job.done:
                self._cond.wait()
        if job.request.error is not None:
            raise job.request.error
        return job.request.generations()

    def stats(self) -> dict[str, float]:
        """Counts of admissions, requests, rows and decode steps so far, and the requests waiting and running."""
        with self._cond:
            return {**self._stats.as_dict(), "waiting": len(self._queue), "running": len(self._jobs)}

    # ------------------------------------------------------------------------------------ internals

    def _drive(self) -> None:
        """The driver thread: admit, step, answer, until nothing runs or waits."""
        try:
            while True:
                with self._cond:
                    solo, joining = self._take()
                    if solo is None and not joining and not len(self.running):
                        self._driving = False
                        return
                if solo is not None:
                    self._run_alone(solo)
                    finished = [solo.request]
                else:
                    finished = self.running.admit([job.request for job in joining]) if joining else []
                    rows = len(self.running)
                    with self._cond:
                        self._stats.retried = self.running.retried
                    if rows:
                        finished += self.running.step()
                        with self._cond:
                            self._stats.steps += 1
                            self._stats.row_steps += rows
                with self._cond:
                    for request in finished:
                        self._jobs.pop(request).done = True
                    self._cond.notify_all()
        except BaseException as error:  # a bug in the driver itself: no caller may wait forever
            log.exception("the batch driver failed")
            with self._cond:
                for job in [*self._jobs.values(), *self._queue]:
                    job.request.error = job.request.error or error
                    job.done = True
                self._jobs.clear()
                self._queue.clear()
                self.running = type(self.running)(self.running.policy)
                self._driving = False
                self._cond.notify_all()

    def _take(self) -> tuple[_Job | None, list[_Job]]:
        """Under the lock: the next job to run alone, or the waiting jobs that join the batch now (oldest first)."""
        if self._queue and self._queue[0].alone is not None:
            job = self._queue.popleft()
            self._jobs[job.request] = job
            self._count([job], alone=True)
            return job, []
        rows, joining = len(self.running), list[_Job]()
        while self._queue and self._queue[0].alone is None:
            size = len(self._queue[0].request.conversations)
            if rows + size > self.max_batch and (rows or joining):
                break  # it waits for rows to finish (nothing jumps the queue, so large requests do not starve)
            job = self._queue.popleft()
            self._jobs[job.request] = job
            joining.append(job)
            rows += size
        if joining:
            self._count(joining, alone=False)
        return None, joining

    def _count(self, jobs: list[_Job], alone: bool) -> None:
        stats, already = self._stats, len(self.running.requests())
        stats.batches += 1
        stats.requests += len(jobs)
        stats.rows += sum(len(job.request.conversations) for job in jobs)
        stats.joined += 0 if alone or not already else len(jobs)
        stats.batched_calls += not alone and (len(jobs) > 1 or already > 0)
        stats.largest = max(stats.largest, len(jobs) + (0 if alone else already))

    @staticmethod
    def _run_alone(job: _Job) -> None:
        assert job.alone is not None
        try:
            job.request.results = list(job.alone())
        except BaseException as error:  # kept for the caller's thread, which re-raises it
            job.request.error = error
