"""Request batching for ``sketchmind serve``: requests that wait for the model share one ``generate_batch`` call.

A local model decodes a batch of rows in lockstep for little more than the cost of one row (the HF
backend's ``generate_batch``), so 16 clients answered one at a time waste most of the model. The
``Batcher`` queues every request; whichever caller finds a free model slot becomes the batch's leader:
it takes the oldest queued request and every later one with the same sampling settings (up to
``max_batch`` rows), runs them as one ``generate_batch`` call and hands each caller its own rows. Requests
that arrive while a batch runs wait for the next one: the unit of batching is the call, not the decode
step. Backends that keep a running batch (the HF backend) are served by ``server_continuous`` instead,
where waiting requests join the batch between decode steps; this batcher serves the others (and
``max_batch=1``, one request at a time).

Which requests may share a batch (``run``'s ``batchable``, decided by the server):

- the same ``Sampling`` (token budget, temperature, top-p, stop strings): ``generate_batch`` takes one;
- no seeded sampling: a batching backend draws row ``i`` with ``seed + i``, so a seeded request would
  sample differently depending on where it sat in someone else's batch. Greedy requests (temperature 0)
  ignore the seed and always batch;
- not a token-by-token stream: ``Policy.generate_stream`` reports the text of one row, so an incremental
  stream runs alone, in its turn (a stream with ``n > 1`` or ``tools`` is generated whole and batches).

Greedy rows give the same tokens batched or alone (the HF backend pads and masks each row, with its own
positions). A failed batch is retried request by request, so a failure reaches only the request that
caused it, and one bad image cannot fail fifteen other clients.

Before taking a batch the leader may wait up to ``window`` seconds for more requests, but only while
fewer rows are queued than the previous batch held: a lone client never waits (its last batch held one
row), while under load the requests that clients send back as soon as their answers arrive gather into
one batch instead of the first of them running alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    """One request's rows, how to run it by itself, and (once run) its result or its error."""

    conversations: list[Conversation]
    sampling: Sampling
    key: Sampling | None  # jobs with equal keys may share a batch; None: the job always runs alone
    alone: Callable[[], list[Generation]]
    taken: bool = False  # a leader has taken it out of the queue
    done: bool = False
    result: list[Generation] = field(default_factory=list)
    error: BaseException | None = None

    def run_alone(self) -> None:
        try:
            self.result = self.alone()
        except BaseException as error:  # kept for the caller's thread, which re-raises it
            self.error = error


@dataclass
class BatchStats:
    """What the batcher has run so far: one batch is one call to the model (alone or batched)."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest: int = 0  # most requests in one batch
    batched_calls: int = 0  # generate_batch calls over more than one request
    retried: int = 0  # batches that failed and were retried request by request

    def as_dict(self) -> dict[str, float]:
        """JSON-ready, with the mean requests per batch."""
        mean = self.requests / self.batches if self.batches else 0.0
        return {**vars(self), "mean_requests": mean}


class Batcher:
    """Runs the server's generation requests, several per ``policy.generate_batch`` call where it may.

    Args:
        policy: the served policy.
        slots: how many batches may run at once (the server's ``concurrency``; 1 for a local model,
            which is not thread-safe).
        max_batch: the most rows (completions) in one batch; 1 runs requests one at a time.
        window: the longest a leader waits for more requests before it takes a batch (seconds).
    """

    def __init__(self, policy: Policy, *, slots: int = 1, max_batch: int = 16, window: float = 0.05) -> None:
        if slots < 1 or max_batch < 1 or window < 0:
            raise ValueError("slots and max_batch must be >= 1, window >= 0")
        self.policy = policy
        self.max_batch = max_batch
        self.window = window
        self._free = slots
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._last_rows = 1  # rows of the last batch: how many the next one waits for, within the window
        self._stats = BatchStats()

    def run(
        self,
        conversations: Sequence[Conversation],
        sampling: Sampling,
        alone: Callable[[], list[Generation]],
        batchable: bool,
    ) -> list[Generation]:
        """The generations of one request's ``conversations``, in order; blocks until they are done.

        ``alone()`` is how the request runs by itself (streaming, seeded samples, a backend that does not
        batch). With ``batchable`` the request may instead share a ``generate_batch`` call with others of
        the same ``sampling``. The request's own error is raised here, in its caller's thread.
        """
        job = _Job(list(conversations), sampling, sampling if batchable and self.max_batch > 1 else None, alone)
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()  # a leader waiting for more requests counts this one
        while True:
            with self._cond:
                while not job.done and (job.taken or self._free == 0):
                    self._cond.wait()
                if job.done:
                    break
                self._free -= 1  # this caller leads the next batch (the oldest request first, maybe not its own)
                batch = self._take()
            try:
                self._execute(batch)
            except BaseException as error:  # not the model's failure (those stay on their jobs): e.g. shutdown
                for taken in batch:
                    taken.error = taken.error or error
            finally:
                with self._cond:
                    self._free += 1
                    for taken in batch:
                        taken.done = True
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        return job.result

    def stats(self) -> dict[str, float]:
        """Counts of batches, requests and rows run so far, and the requests waiting now (``GET /stats``)."""
        with self._cond:
            return {**self._stats.as_dict(), "waiting": len(self._queue)}

    # ------------------------------------------------------------------------------------ internals

    def _compatible_rows(self, head: _Job) -> int:
        return sum(len(job.conversations) for job in self._queue if job.key == head.key)

    def _take(self) -> list[_Job]:
        """Under the lock: the oldest queued job and the later ones that may share its batch."""
        if self._queue and self._queue[0].key is not None and self.window > 0:
            deadline = time.monotonic() + self.window
            target = min(self._last_rows, self.max_batch)
            while self._queue and self._queue[0].key is not None and self._compatible_rows(self._queue[0]) < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)  # releases the lock: requests keep arriving meanwhile
        if not self._queue:  # another slot's leader took them while this one waited
            return []
        head = self._queue[0]
        batch, rows = [head], len(head.conversations)
        if head.key is not None:
            for job in list(self._queue)[1:]:
                if job.key == head.key and rows + len(job.conversations) <= self.max_batch:
                    batch.append(job)
                    rows += len(job.conversations)
        for job in batch:
            self._queue.remove(job)
            job.taken = True
        if head.key is not None:
            self._last_rows = rows
        stats = self._stats
        stats.batches += 1
        stats.requests += len(batch)
        stats.rows += rows
        stats.largest = max(stats.largest, len(batch))
        stats.batched_calls += len(batch) > 1
        return batch

    def _execute(self, batch: list[_Job]) -> None:
        """Run ``batch`` (outside the lock), leaving each job's result or error on the job."""
        if len(batch) <= 1:
            for job in batch:
                job.run_alone()
            return
        rows = [conversation for job in batch for conversation in job.conversations]
        try:
            generations = self.policy.generate_batch(rows, batch[0].sampling)
            if len(generations) != len(rows):
                raise BackendError(f"the backend returned {len(generations)} generations for {len(rows)} rows")
        except Exception as error:  # whose request caused it is unknown: each runs again alone
            log.warning("a batch of %d requests failed (%s); running them one by one", len(batch), error)
            with self._cond:
                self._stats.retried += 1
            for job in batch:
                job.run_alone()
            return
        start = 0
        for job in batch:
            job.result = generations[start : start + len(job.conversations)]
            start += len(job.conversations)
