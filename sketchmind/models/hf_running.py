"""Continuous batching for the HF backend: one running batch that requests join and leave between decode steps.

``HFPolicy.generate_batch`` decodes a fixed set of rows in lockstep until the last one ends, so a request
that arrives meanwhile waits for the whole batch. A ``RunningBatch`` instead keeps decoding across
requests, as vLLM's scheduler does:

- ``admit`` plans the new requests' rows with the backend's own ``_plan`` (so their own KV from earlier
  turns and cached shared prefixes are reused exactly as in ``generate``), prefills them together in one
  forward, samples their first token and stacks their KV onto the running rows' (``hf_cache.stack``:
  every row right-aligned, its left padding masked);
- ``step`` decodes one token for every running row and retires the rows that finished at once (their
  conversation state is saved as ``generate`` saves it), so their callers get answers without waiting
  for the longest row.

Greedy rows give the tokens ``generate`` gives: each row keeps its own positions and attention mask, so
which rows it shares the batch with, and when they joined, change nothing but the float rounding of the
padded matmuls. Each request brings its own sampling (token budget, stop strings, temperature, top-p):
rows are sampled in groups of equal temperature and top-p, and stop on their own budget and strings.

Only for policies whose cache can be stitched (``HFPolicy.running_batch``). Not thread-safe: one thread
(the server's driver, ``server_continuous``) owns it, as one thread at a time owns the policy. torch is
imported when a batch is used, as in ``hf``, so the server imports this module without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sketchmind.models.base import BackendError, Conversation, Generation, Sampling

if TYPE_CHECKING:
    import torch

    from sketchmind.models.hf import HFPolicy, Row


@dataclass(eq=False)
class Request:
    """One caller's rows: its conversations, its sampling and, for a token stream, its callback.

    ``results`` fills row by row as rows finish; ``error`` is set when the request failed (all its rows leave).
    """

    conversations: list[Conversation]
    sampling: Sampling
    on_text: Callable[[str], None] | None = None
    results: list[Generation | None] = field(default_factory=list)
    error: BaseException | None = None
    started: float = 0.0  # when it was admitted (perf_counter): its generations' ``seconds`` count from here

    def __post_init__(self) -> None:
        self.results = [None] * len(self.conversations)

    @property
    def done(self) -> bool:
        return self.error is not None or all(result is not None for result in self.results)

    def generations(self) -> list[Generation]:
        return [result for result in self.results if result is not None]


@dataclass(eq=False)
class _Live:
    """One row in the batch: whose it is, its decoding state and the rotary position of its next token."""

    request: Request
    index: int  # which of the request's conversations
    row: Row
    position: int


@dataclass
class _Batch:
    """Rows with their batch cache and attention mask ``(rows, slots)``; the cache holds as many slots."""

    live: list[_Live]
    cache: Any  # DynamicCache
    mask: torch.Tensor


class RunningBatch:
    """The rows being decoded for an ``HFPolicy``: ``admit`` adds requests, ``step`` decodes one token for all."""

    def __init__(self, policy: HFPolicy) -> None:
        self.policy = policy
        self.retried = 0  # joint prefills that failed and were retried request by request
        self._batch: _Batch | None = None

    def __len__(self) -> int:
        """Rows decoding now."""
        return len(self._batch.live) if self._batch else 0

    def requests(self) -> list[Request]:
        """The requests with rows decoding now, oldest first."""
        return list(dict.fromkeys(live.request for live in self._batch.live)) if self._batch else []

    def admit(self, requests: Sequence[Request]) -> list[Request]:
        """Prefill ``requests`` and add their rows to the batch; returns those already done.

        A request is done here when it failed (a request the backend cannot plan, or whose prefill fails
        even alone, fails by itself) or when all its rows finished at their first token.
        """
        import torch

        now = time.perf_counter()
        for request in requests:
            request.started = now
        with torch.inference_mode():
            planned: list[tuple[Request, list[Any]]] = []
            for request in requests:
                try:
                    planned.append((request, [self.policy._plan(c, shared=True) for c in request.conversations]))
                except Exception as error:
                    request.error = self.policy._failure(error, request.conversations)
            try:
                self._prefill(planned)
            except Exception as error:  # whose rows caused it is unknown: each request is prefilled again alone
                self.retried += len(planned) > 1
                for one in planned if len(planned) > 1 else []:
                    try:
                        self._prefill([one])
                    except Exception as alone:
                        one[0].error = self.policy._failure(alone, one[0].conversations)
                if len(planned) == 1:
                    planned[0][0].error = self.policy._failure(error, planned[0][0].conversations)
        return [request for request in requests if request.done]

    def step(self) -> list[Request]:
        """Decode one token for every row; returns the requests that finished (or failed) with it.

        A failure of the forward itself (out of memory, say) fails every request in the batch.
        """
        import torch

        from sketchmind.models import hf_cache

        batch = self._batch
        if batch is None:
            return []
        policy = self.policy
        try:
            with torch.inference_mode():
                device = policy.device
                tokens = torch.tensor([live.row.ids[-1] for live in batch.live], device=device).view(-1, 1)
                positions = torch.tensor([live.position for live in batch.live], device=device).view(-1, 1)
                if policy._rope_index is not None:  # text tokens: the same position on all three M-RoPE axes
                    positions = positions.unsqueeze(0).expand(3, -1, -1)
                batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.live), 1))], dim=1)
                hidden = policy._decoder(
                    inputs_embeds=policy._embed(tokens),
                    attention_mask=batch.mask,
                    position_ids=positions,
                    use_cache=True,
                    **{policy._decoder_cache_kw: batch.cache},
                ).last_hidden_state
                for live in batch.live:
                    live.position += 1
                done = self._advance(batch, policy._head(hidden[:, -1]))
        except Exception as error:
            failed = self.requests()
            for request in failed:
                request.error = request.error or policy._failure(error, request.conversations)
            self._batch = None
            return failed
        if not batch.live:
            self._batch = None
        elif 2 * int(batch.mask.any(dim=0).int().argmax()) > batch.mask.shape[1]:
            # Most slots are left padding of rows that left: compact, so attention stops reading them.
            cache, mask = hf_cache.stack(policy._model.config, [(batch.cache, batch.mask)], self._room(batch.live))
            batch.cache, batch.mask = cache, mask
        return done

    # ------------------------------------------------------------------------------------ internals

    def _prefill(self, planned: Sequence[tuple[Request, list[Any]]]) -> None:
        """One forward over the planned rows' prompts, their first tokens, and the survivors join the batch."""
        from sketchmind.models import hf_cache

        policy = self.policy
        live: list[_Live] = []
        plans = []
        for request, request_plans in planned:
            request.results = [None] * len(request_plans)  # a retry after a failed joint prefill starts afresh
            for index, plan in enumerate(request_plans):
                row = policy._new_row(plan, policy._generator(request.sampling, index))
                live.append(_Live(request, index, row, plan.next_position))
                plans.append(plan)
        if not plans:
            return
        kwargs, _, _ = policy._inputs(plans, 0)  # no decoding room: ``stack`` copies the rows into the batch
        out = policy._model(**kwargs, use_cache=True, logits_to_keep=1)
        newcomers = _Batch(live, getattr(out, policy._cache_kw), kwargs["attention_mask"])
        self._advance(newcomers, out.logits[:, -1])
        if not newcomers.live:
            return
        parts = [(self._batch.cache, self._batch.mask)] if self._batch else []
        parts.append((newcomers.cache, newcomers.mask))
        everyone = (self._batch.live if self._batch else []) + newcomers.live
        cache, mask = hf_cache.stack(policy._model.config, parts, self._room(everyone))
        self._batch = _Batch(everyone, cache, mask)

    @staticmethod
    def _room(live: Sequence[_Live]) -> int:
        """Slots the rows may still decode into (the most any row's budget leaves)."""
        return max(one.request.sampling.max_new_tokens - len(one.row.ids) for one in live) + 1

    def _advance(self, batch: _Batch, logits: torch.Tensor) -> list[Request]:
        """Sample each row's next token from ``logits``, retire the rows that finished; the requests now done."""
        import torch

        from sketchmind.models import hf_cache

        policy = self.policy
        groups: dict[tuple[float, float], list[int]] = {}
        for b, live in enumerate(batch.live):
            sampling = live.request.sampling
            key = (0.0, 1.0) if sampling.temperature <= 0 else (sampling.temperature, sampling.top_p)
            groups.setdefault(key, []).append(b)
        chosen: dict[int, tuple[int, float]] = {}
        for members in groups.values():
            rows = [batch.live[b].row for b in members]
            index = torch.tensor(members, device=logits.device)
            tokens, logprobs = policy._choose(logits[index], rows, batch.live[members[0]].request.sampling)
            chosen.update(zip(members, zip(tokens.tolist(), logprobs.tolist(), strict=True), strict=True))
        now = time.perf_counter()
        for b, live in enumerate(batch.live):
            request, row, sampling = live.request, live.row, live.request.sampling
            if request.error is None:
                token, logprob = chosen[b]
                row.ids.append(token)
                row.logprob += logprob
                row.eos = token in policy._eos
                if request.on_text is not None and not row.eos:  # a token stream: the text so far
                    try:
                        request.on_text(policy._decode(row.ids, skip_special=True))
                    except Exception as error:  # the caller's failure (it went away, say) is its own
                        request.error = error
                if row.eos or len(row.ids) >= sampling.max_new_tokens or policy._stopped(row, sampling.stop):
                    spans = hf_cache.mask_spans(batch.mask[b])
                    request.results[live.index] = policy._finish(
                        row, batch.cache, b, spans, request.started, sampling.stop
                    )
                elif sampling.timeout is not None and now - request.started > sampling.timeout:
                    request.error = BackendError(f"generation timed out after {sampling.timeout:g} s")
        # Finished rows leave now, and a failed request's other rows with them.
        leaving = [
            b
            for b, live in enumerate(batch.live)
            if live.request.error is not None or live.request.results[live.index] is not None
        ]
        done = [request for request in dict.fromkeys(batch.live[b].request for b in leaving) if request.done]
        for request in done:
            if request.error is not None:
                policy._drop(request.conversations)
        if leaving:
            keep = [b for b in range(len(batch.live)) if b not in leaving]
            if keep:
                index = torch.tensor(keep, device=batch.mask.device)
                batch.cache.batch_select_indices(index)
                batch.mask = batch.mask[index]
            batch.live = [batch.live[b] for b in keep]
        return done
