"""KV-cache plumbing for the HF backend: preallocated layers, padded batches, and per-row extraction.

``transformers.DynamicCache`` appends by concatenation, which copies a layer's whole cache at every
decoded token: at 32 rows of 850 tokens that copying is over half of a CPU decode step. A
``BufferedLayer`` is a ``DynamicLayer`` over a buffer sized for the turn (prompt plus ``max_new_tokens``),
so a token is one in-place write and the attention reads a view.

Imported by ``sketchmind.models.hf`` only when a model is loaded (it imports torch and transformers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

KV: TypeAlias = list[tuple[torch.Tensor, torch.Tensor]]
"""One conversation's cache: (keys, values) per layer, each ``(1, kv_heads, length, head_dim)``."""


class BufferedLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A growable cache layer that writes into a preallocated buffer instead of concatenating.

    ``keys``/``values`` are views of the filled part, as ``DynamicLayer`` exposes them. The buffer grows
    (doubling) only if a turn writes more than ``capacity`` tokens.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.capacity = capacity
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def allocate(self, like_keys: torch.Tensor, like_values: torch.Tensor, rows: int) -> None:
        """Zeroed buffers (padding must be finite even though it is masked) shaped after a layer's KV."""
        super().lazy_initialization(like_keys, like_values)
        self.key_buffer = like_keys.new_zeros((rows, like_keys.shape[1], self.capacity, like_keys.shape[3]))
        self.value_buffer = like_values.new_zeros((rows, like_values.shape[1], self.capacity, like_values.shape[3]))

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.allocate(key_states, value_states, key_states.shape[0])

    def fill(self, length: int) -> None:
        """Mark the first ``length`` slots (written directly into the buffers) as cached."""
        self.length = length
        self._views()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.key_buffer is None:
            self.lazy_initialization(key_states, value_states)
        assert self.key_buffer is not None and self.value_buffer is not None
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:
            self._grow(max(end, 2 * self.key_buffer.shape[-2]))
            assert self.key_buffer is not None and self.value_buffer is not None
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        return self._views()

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.key_buffer is not None and self.value_buffer is not None:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0:  # as DynamicLayer: a negative count drops that many tokens at the end
            self.length = max(0, self.length + tokens_to_remove)
            self._views()

    def _grow(self, capacity: int) -> None:
        assert self.key_buffer is not None and self.value_buffer is not None
        pad = capacity - self.key_buffer.shape[-2]
        self.key_buffer = torch.nn.functional.pad(self.key_buffer, (0, 0, 0, pad))
        self.value_buffer = torch.nn.functional.pad(self.value_buffer, (0, 0, 0, pad))
        self.capacity = capacity

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.key_buffer is not None and self.value_buffer is not None
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]
        return self.keys, self.values


def plain_layers(config: Any) -> bool:
    """Whether the model's default cache is all full-attention ``DynamicLayer``s (no sliding window, no
    linear-attention state): only then can a cache be cropped, padded and stitched across turns."""
    layers = DynamicCache(config=config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def padded_cache(config: Any, rows: Sequence[KV | None], lengths: Sequence[int], capacity: int) -> DynamicCache:
    """A ``DynamicCache`` of ``BufferedLayer``s holding each row's KV right-aligned at ``max(lengths)``.

    Rows without a cache (or all of them) leave zeros there, which the attention mask hides. The buffers
    hold ``capacity`` tokens: enough for the prompt and the turn's decoding.
    """
    cache = DynamicCache(config=config)
    layers = [BufferedLayer(capacity) for _ in cache.layers]
    cache.layers = list(layers)
    cached = max(lengths, default=0)
    reference = next((kv for kv in rows if kv is not None), None)
    if reference is None or cached == 0:
        return cache  # the prefill allocates the buffers (lazy_initialization)
    for index, layer in enumerate(layers):
        layer.allocate(reference[index][0], reference[index][1], len(rows))
        assert layer.key_buffer is not None and layer.value_buffer is not None
        for row, (kv, length) in enumerate(zip(rows, lengths, strict=True)):
            if kv is not None and length:
                layer.key_buffer[row, :, cached - length : cached] = kv[index][0][0, :, :length]
                layer.value_buffer[row, :, cached - length : cached] = kv[index][1][0, :, :length]
        layer.fill(cached)
    return cache


def row_kv(cache: DynamicCache, row: int, spans: Sequence[tuple[int, int]]) -> KV:
    """Row ``row``'s KV at the given (start, end) slot ranges of a batch cache, as a one-row cache.

    Always a copy: a view would keep the whole batch's (and the unused capacity's) buffers alive.
    """
    spans = [(lo, hi) for lo, hi in spans if hi > lo]
    out: KV = []
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer) and layer.keys is not None and layer.values is not None
        keys, values = layer.keys[row : row + 1], layer.values[row : row + 1]
        if len(spans) == 1:
            lo, hi = spans[0]
            out.append((keys[:, :, lo:hi].clone(), values[:, :, lo:hi].clone()))
        else:
            index = torch.cat([torch.arange(lo, hi) for lo, hi in spans]).to(keys.device)
            out.append((keys.index_select(2, index), values.index_select(2, index)))
    return out


def first_slots(spans: Sequence[tuple[int, int]], count: int) -> list[tuple[int, int]]:
    """The first ``count`` slots of ``spans`` (slot ranges in token order), as ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in spans:
        take = min(hi - lo, count)
        if take > 0:
            out.append((lo, lo + take))
            count -= take
    return out


def mask_spans(mask: torch.Tensor) -> list[tuple[int, int]]:
    """The runs of ones in a row's attention mask ``(length,)``: the slots that hold the row's KV, in order."""
    slots = mask.nonzero().view(-1).tolist()
    spans: list[tuple[int, int]] = []
    for slot in slots:
        if spans and spans[-1][1] == slot:
            spans[-1] = (spans[-1][0], slot + 1)
        else:
            spans.append((slot, slot + 1))
    return spans


def stack(
    config: Any, parts: Sequence[tuple[DynamicCache, torch.Tensor]], room: int
) -> tuple[DynamicCache, torch.Tensor]:
    """One batch cache and attention mask holding the rows of ``parts`` (batch caches with their masks), in order.

    Every row keeps its slots in order and right-aligned, as ``padded_cache`` lays out a batch: the newest
    token of every row sits in the last slot, so a decode step appends one slot for all rows. Leading slots
    that no row of a part uses (rows that left) are dropped, so a long row that finished stops costing
    attention. The buffers leave ``room`` free slots for decoding (they grow if a row needs more).
    """
    trimmed: list[tuple[DynamicCache, torch.Tensor, int]] = []
    for cache, mask in parts:
        used = mask.any(dim=0).nonzero().view(-1)
        first = int(used[0]) if len(used) else mask.shape[1]
        trimmed.append((cache, mask[:, first:], first))
    length = max(mask.shape[1] for _, mask, _ in trimmed)
    rows = sum(mask.shape[0] for _, mask, _ in trimmed)
    out = DynamicCache(config=config)
    layers = [BufferedLayer(length + room) for _ in out.layers]
    out.layers = list(layers)
    for index, layer in enumerate(layers):
        reference = trimmed[0][0].layers[index]
        assert isinstance(reference, DynamicLayer) and reference.keys is not None and reference.values is not None
        layer.allocate(reference.keys, reference.values, rows)
        assert layer.key_buffer is not None and layer.value_buffer is not None
        row = 0
        for cache, mask, first in trimmed:
            source = cache.layers[index]
            assert isinstance(source, DynamicLayer) and source.keys is not None and source.values is not None
            count, width = mask.shape
            layer.key_buffer[row : row + count, :, length - width : length] = source.keys[:, :, first:]
            layer.value_buffer[row : row + count, :, length - width : length] = source.values[:, :, first:]
            row += count
        layer.fill(length)
    masks = [torch.nn.functional.pad(mask, (length - mask.shape[1], 0)) for _, mask, _ in trimmed]
    return out, torch.cat(masks)
