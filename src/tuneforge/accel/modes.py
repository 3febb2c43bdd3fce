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

from tuneforge.accel.compact_activations import compact_saved_activations
from tuneforge.accel.frozen_base import frozen_base_in
from tuneforge.accel.fused_lora import fused_lora
from tuneforge.accel.heap import return_freed_heap
from tuneforge.accel.packed_attention import packed_attention
from tuneforge.accel.swiglu import gated_mlps
from tuneforge.methods.base import transformer_blocks
from tuneforge.recipe import SpeedConfig


@contextmanager
def training_forms(model: nn.Module, speed: SpeedConfig, *, frozen_dtype: torch.dtype | None, spill_to: Path,
                   sharded: bool = False, per_example: bool = False) -> Iterator[None]:
    """``model`` (unwrapped) as ``speed`` trains it; ``frozen_dtype`` as ``preflight.resolve_frozen_dtype``
    decides; ``sharded``: FSDP; ``per_example``: per-example gradients (DP-SGD).

    FSDP's flat-parameter shards rule out swapping weights or classes; per-example gradients and
    ``torch.compile`` keep peft's own LoRA forward, and compiled blocks keep their own MLP forward.
    """
    with ExitStack() as stack:
        stack.callback(return_freed_heap)  # last out: the steps' freed activations go back to the OS
        stack.enter_context(fused_lora(model, speed.fused_lora and not (speed.compile or sharded or per_example)))
        stack.enter_context(frozen_base_in(model, None if sharded else frozen_dtype, spill_to))
        stack.enter_context(gated_mlps(model, not speed.compile))
        stack.enter_context(packed_attention(model, speed.packing or speed.compact_activations))
        stack.enter_context(compact_saved_activations(model, speed.compact_activations))
        yield


def compile_blocks(model: nn.Module) -> None:
    """``torch.compile`` every transformer block in place (regional compilation).

    Why blocks and not the whole model: the blocks are where the FLOPs are and they share one code
    object, so one compilation serves all of them (the whole-model graph would take minutes to build
    and recompile whenever the chunked loss swaps the output head, or generation changes shapes).
    """
    _, blocks = transformer_blocks(model)
    for block in blocks:
        block.compile(dynamic=True)
