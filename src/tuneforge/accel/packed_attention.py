"""Attention over packed rows, one example at a time: causal SDPA per segment instead of one masked square.

Why: with packing, transformers gives SDPA a block-diagonal causal mask over the whole row. PyTorch's
fused CPU kernel applies a mask but does not skip the blocks it hides, so a row of ``n`` examples of
length ``L`` costs ``(n * L)^2`` where the examples need ``n * L^2 / 2``: at four SNIPS examples per row,
attention was an eighth of a training step. Variable-length ("varlen") kernels that take the segment
boundaries exist for CUDA (flash-attention-2, used when ``train.attention`` asks for it), not for SDPA
on a CPU. So this attention function splits each packed row at its example boundaries (read from the
position ids, where transformers reads them too) and runs causal SDPA on each example, which takes the
kernel's causal fast path: the same numbers, a fraction of the work.

It is registered as ``tuneforge_packed`` (attention and mask) and set on the model only for the
training loop's forwards (:func:`packed_attention`). Anything that is not a packed training forward
(eval, generation with a cache, a padded batch) goes to transformers' own ``sdpa`` function unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from tuneforge.accel.compact_activations import full_precision

NAME = "tuneforge_packed"
_last: tuple[torch.Tensor | None, list[list[int]] | None] = (None, None)  # one forward's segments, reused by its layers


def segment_lengths(position_ids: torch.Tensor) -> list[list[int]] | None:
    """Per row, the lengths of the examples packed in it, or ``None`` if the rows are not packed.

    A packed row's positions restart at 0 for each example and otherwise count up by one.

    >>> segment_lengths(torch.tensor([[0, 1, 2, 0, 1, 0]]))
    [[3, 2, 1]]
    >>> segment_lengths(torch.tensor([[0, 1, 2, 3]])) is None  # one example: plain causal attention
    True
    """
    if position_ids.dim() != 2:
        return None
    starts = position_ids == 0  # (B, T)
    steps = position_ids[:, 1:] == position_ids[:, :-1] + 1  # (B, T - 1)
    if not bool(starts[:, 0].all()) or not bool((steps | starts[:, 1:]).all()) or int(starts.sum()) <= len(starts):
        return None
    out = []
    for row in starts:
        begin = row.nonzero().flatten().tolist() + [row.numel()]
        out.append([b - a for a, b in zip(begin, begin[1:])])
    return out


def _segments(position_ids: torch.Tensor) -> list[list[int]] | None:
    global _last
    if _last[0] is not position_ids:  # the layers of one forward share one position-ids tensor
        _last = (position_ids, segment_lengths(position_ids))
    return _last[1]


def packed_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                **kwargs: Any) -> tuple[torch.Tensor, None]:
    """``(B, H, T, D)`` query/key/value of a packed training forward to ``(B, T, H, D)``, example by example."""
    with full_precision():  # its backward recomputes the softmax from what it saves: keep that float32
        return _packed_sdpa(module, query, key, value, attention_mask, dropout, scaling, **kwargs)


def _packed_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float, scaling: float | None,
                 **kwargs: Any) -> tuple[torch.Tensor, None]:
    position_ids = kwargs.get("position_ids")
    same_length = query.shape[2] == key.shape[2]
    lengths = _segments(position_ids) if module.training and same_length and position_ids is not None else None
    if lengths is None or len(lengths) != query.shape[0]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gqa = getattr(module, "num_key_value_groups", 1) > 1  # the fused kernel reads shared key/value heads itself
    rows = []
    # 4-D slices: the fused kernel takes (1, H, L, D), 3-D falls back to the math path
    for b, row in enumerate(lengths):
        parts = zip(query[b : b + 1].split(row, dim=2), key[b : b + 1].split(row, dim=2),
                    value[b : b + 1].split(row, dim=2))
        rows.append(torch.cat([torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa) for q, k, v in parts],
            dim=2))  # (1, H, T, D)
    return torch.cat(rows).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, packed_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the same mask as sdpa for whatever falls back


@contextmanager
def packed_attention(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Use :func:`packed_sdpa` for the duration of training when packing is on and the model uses ``sdpa``."""
    config = getattr(model, "config", None)
    if not enabled or config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    configs = {id(m.config): m.config for m in model.modules() if getattr(m, "config", None) is not None
               and getattr(m.config, "_attn_implementation", None) == "sdpa"}
    for c in configs.values():
        c._attn_implementation = NAME
    try:
        yield
    finally:
        global _last
        _last = (None, None)
        for c in configs.values():
            c._attn_implementation = "sdpa"
