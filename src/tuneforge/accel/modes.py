"""The forms a model takes while it trains, entered together by the loop and by the preflight's probe.

Why one place: each of these swaps something inside the model for the duration (LoRA layers' class,
the frozen base's dtype, the gated MLPs' product, the attention path, the saved-tensor hooks) and must
be undone in reverse order, also on failure. The preflight measures a step in the same forms, so its
throughput and memory estimates describe the run that follows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch import nn

from tuneforge.accel.frozen_base import frozen_base_in
from tuneforge.accel.fused_lora import fused_lora
from tuneforge.recipe import TrainConfig
from tuneforge.accel.compact_activations import compact_saved_activations
from tuneforge.accel.heap import return_freed_heap
from tuneforge.accel.packed_attention import packed_attention
from tuneforge.accel.swiglu import gated_mlps


@contextmanager
def training_forms(model: nn.Module, cfg: TrainConfig, *, frozen_dtype: torch.dtype | None, spill_to: Path,
                   sharded: bool = False, private: bool = False) -> Iterator[None]:
    """``model`` (unwrapped) as ``cfg`` trains it; ``frozen_dtype`` as ``preflight.resolve_frozen_dtype``
    decides; ``sharded``: FSDP; ``private``: DP-SGD.

    FSDP's flat-parameter shards rule out swapping weights or classes; DP-SGD's per-example gradients
    and ``torch.compile`` keep peft's own LoRA forward, and compiled blocks keep their own MLP forward.
    """
    with ExitStack() as stack:
        stack.callback(return_freed_heap)  # last out: the steps' freed activations go back to the OS
        stack.enter_context(fused_lora(model, cfg.fused_lora and not (cfg.compile or sharded or private)))
        stack.enter_context(frozen_base_in(model, None if sharded else frozen_dtype, spill_to))
        stack.enter_context(gated_mlps(model, not cfg.compile))
        stack.enter_context(packed_attention(model, cfg.packing or cfg.compact_activations))
        stack.enter_context(compact_saved_activations(model, cfg.compact_activations))
        yield
