"""The gated MLP's ``silu(gate) * up`` as one autograd function that keeps two tensors for backward, not three.

Why: LLaMA-style blocks compute ``down(silu(gate(x)) * up(x))``. Autograd keeps ``gate(x)`` for the SiLU's
backward, and both ``silu(gate(x))`` and ``up(x)`` for the product's: three ``intermediate_size``-wide
tensors a token (1536 in SmolLM2), the block's largest activations. Here SiLU's output is recomputed in
backward from ``gate(x)`` (one element-wise pass), so a third of that memory is never kept: 92 KB a
token over SmolLM2-135M's 30 blocks with bf16 saved activations, 184 KB without. The forward is one
pass shorter too (the product is taken in place).

A fused LoRA ``down_proj`` (``accel/fused_lora.py``) needs its input in backward for ``lora_A``'s
gradient. The product carries its factors (:data:`FACTORS`), which this function keeps anyway, so the
layer keeps references to them, not a copy of the product, and recomputes it in backward (one SiLU
and one product): another 1536-wide tensor a token and block not kept, 184 KB a token for SmolLM2-135M
in float32.

The arithmetic is autograd's own (``silu``, ``silu_backward`` and the two products, in the same order),
so losses and gradients are bit-identical to the module's own forward (tested). Only MLP classes whose
``forward`` is known to be exactly that expression are switched (:data:`GATED_MLPS`, a new one is a line).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import Any

import torch
from torch import nn
from transformers.activations import SiLUActivation

FACTORS = "_tuneforge_swiglu_factors"  # attribute of the product: its (gate, up), kept by _SwiGLU anyway
# Classes whose forward is ``self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))``.
GATED_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "Olmo2MLP", "SmolLM3MLP"})


class _SwiGLU(torch.autograd.Function):
    """``silu(gate) * up``, keeping ``gate`` and ``up`` only."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return nn.functional.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = grad * nn.functional.silu(gate)
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up


def _gated_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    product = _SwiGLU.apply(gate, up)
    setattr(product, FACTORS, (gate, up))  # a fused LoRA down_proj recomputes its input from these
    return self.down_proj(product)


def _switchable(module: nn.Module) -> bool:
    silu = isinstance(getattr(module, "act_fn", None), (nn.SiLU, SiLUActivation))
    return type(module).__name__ in GATED_MLPS and silu and "forward" not in module.__dict__  # else: leave it


@contextmanager
def gated_mlps(model: nn.Module, enabled: bool) -> Iterator[int]:
    """Within the block, ``model``'s known gated MLPs run :class:`_SwiGLU`; yields how many."""
    switched: list[Any] = []
    if enabled:
        for module in model.modules():
            if _switchable(module):
                module.forward = MethodType(_gated_forward, module)
                switched.append(module)
    try:
        yield len(switched)
    finally:
        for module in switched:
            del module.forward
