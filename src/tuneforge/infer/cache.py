"""A key/value cache layer held in a preallocated slab, so a decode step writes one column instead of copying.

transformers' ``DynamicLayer`` concatenates every new column onto the whole cache (a copy of the
cache per layer per token: about 7% of a SmolLM2 decode step on CPU). Here the keys and values
live in a ``(B, H, capacity, D)`` slab; ``update`` writes the new columns in place and returns a
view of the filled part, so attention reads exactly the tensors it would read from a dynamic
cache. The slab doubles when it is full. Rows leave with ``keep_rows``; columns that no remaining
row attends to are cut from the left with ``drop_left``; two batches merge with ``merge``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class SlabLayer(DynamicLayer):
    """One layer's keys and values, ``(B, H, T, D)`` views into a larger slab."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self._k = key_states.new_empty(0)
        self._v = value_states.new_empty(0)

    def _reserve(self, b: int, h: int, need: int, d: int, like: torch.Tensor) -> None:
        capacity = self._k.shape[2] if self._k.dim() == 4 else 0
        if need <= capacity and self._k.shape[0] == b:
            return
        size = max(need + 64, 2 * capacity)  # room for the next answers' tokens
        k, v = like.new_zeros((b, h, size, d)), like.new_zeros((b, h, size, d))  # (B, H, C, D)
        if self.length:
            k[:, :, : self.length] = self._k[:, :, : self.length]
            v[:, :, : self.length] = self._v[:, :, : self.length]
        self._k, self._v = k, v

    def _view(self) -> None:
        self.keys = self._k[:, :, : self.length]  # (B, H, T, D)
        self.values = self._v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, h, t, d = key_states.shape  # (B, H, t, D): the new columns
        self._reserve(b, h, self.length + t, d, key_states)
        self._k[:, :, self.length : self.length + t] = key_states
        self._v[:, :, self.length : self.length + t] = value_states
        self.length += t
        self._view()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the batch (finished rows leave)."""
        if self.is_initialized:
            self._k, self._v = self._k[rows], self._v[rows]
            self._view()

    def drop_left(self, n: int) -> None:
        """Drop the first ``n`` columns: left padding that no remaining row attends to any more."""
        if self.is_initialized and n > 0:
            self._k = self._k[:, :, n:].contiguous()
            self._v = self._v[:, :, n:].contiguous()
            self.length -= n
            self._view()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keep_rows(indices)

    def padded(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values left-padded with zeros to ``width`` columns (masked out by the attention mask)."""
        pad = width - self.length
        k = torch.nn.functional.pad(self.keys, (0, 0, pad, 0))  # (B, H, width, D)
        v = torch.nn.functional.pad(self.values, (0, 0, pad, 0))
        return k, v

    def load(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the contents with ``keys`` and ``values`` ``(B, H, T, D)``."""
        self.length = 0
        self._k = keys.new_empty(0)
        self._reserve(keys.shape[0], keys.shape[1], keys.shape[2], keys.shape[3], keys)
        self._k[:, :, : keys.shape[2]] = keys
        self._v[:, :, : keys.shape[2]] = values
        self.length = keys.shape[2]
        self._view()


def new_cache() -> Cache:
    """An empty cache of slab layers (one is added per model layer on first use)."""
    return Cache(layer_class_to_replicate=SlabLayer)


def slab_layers(cache: Cache) -> list[SlabLayer]:
    layers = [layer for layer in cache.layers if isinstance(layer, SlabLayer)]
    if len(layers) != len(cache.layers):
        raise TypeError("the model replaced the slab cache's layers; it cannot decode on the fast path")
    return layers


def merge(first: Cache, second: Cache, width: int) -> None:
    """Append ``second``'s rows to ``first``, both left-padded to ``width`` columns."""
    for a, b in zip(slab_layers(first), slab_layers(second), strict=True):
        ka, va = a.padded(width)
        kb, vb = b.padded(width)
        a.load(torch.cat([ka, kb]), torch.cat([va, vb]))  # (Ba + Bb, H, width, D)
