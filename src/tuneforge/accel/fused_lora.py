"""A LoRA layer's whole training forward and backward in one autograd function.

Why: peft computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as five autograd nodes, and on a
CPU each of them is a full pass over an ``(tokens, out_features)`` tensor: the ``lora_B`` output, the
scaled copy, the sum, and their gradients again in backward. For SmolLM2-135M these element-wise
passes over the 1536-wide MLP tensors are memory-bound and cost as much as the frozen projection's
matmul itself (profile in ``bench/RESULTS.md``). Here the adapter's product is accumulated straight
into the base output (``addmm_``, one pass), the scale rides on the rank-``r`` side, and backward
computes the four gradients it needs from ``x``, the dropped positions and the ``(tokens, r)``
intermediate. A gated MLP's ``down_proj`` keeps the product's factors instead of ``x``, and
recomputes ``x`` in backward (``accel/swiglu.py``).

The arithmetic is peft's (the same dropout draws as ``accel/lora_dropout.py``, in the same order;
tested against peft's forward and gradients). Parameters, their names and the adapter files are
untouched: only the module's class changes, and :func:`unfuse_lora` changes it back. Anything the
fused path does not cover (DoRA and other variants, several active adapters, merged or disabled
adapters, autocast, a LoRA bias) goes through peft's own forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from tuneforge.accel.frozen_base import cast_rows_once, frozen_input_grad, frozen_linear
from tuneforge.accel.lora_dropout import DropoutLoraA, draw_dropped, zero_dropped
from tuneforge.accel.compact_activations import rounds_when_saved
from tuneforge.accel.swiglu import FACTORS as SWIGLU_FACTORS


class _FusedLoraFunction(torch.autograd.Function):
    """``x W^T (+ bias) + s * dropout(x) A^T B^T`` with ``W`` frozen, in any float dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                a: torch.Tensor, b: torch.Tensor, scaling: float, p: float) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        cast = cast_rows_once(x, weight.dtype) if weight.dtype != x.dtype else None  # shared by q, k, v
        out = frozen_linear(rows, weight, bias, cast)  # (N, out), in x's dtype whatever the frozen weight's
        record = draw_dropped(rows.shape, p, x.device) if p > 0 else None  # same draws as DropoutLoraA
        dropped = rows if record is None else zero_dropped(rows.clone(memory_format=torch.contiguous_format), record)
        h = dropped @ a.t()  # (N, r)
        scale = scaling / (1.0 - p)  # inverted dropout's 1 / (1 - p) folded into LoRA's scale
        out.addmm_(h, b.t(), alpha=scale)  # in float32: in bf16 the small update would round away
        # Where saved activations are rounded to bf16 anyway (compact_activations), keep the bf16 copy
        # the frozen product already made: the same numbers, without a second rounding pass.
        factors = getattr(x, SWIGLU_FACTORS, None)  # x = silu(gate) * up: keep gate and up, kept anyway
        ctx.factors = factors is not None
        ctx.rounded = not ctx.factors and cast is not None and cast.dtype == torch.bfloat16 and rounds_when_saved(rows)
        kept = factors if factors is not None else (cast if ctx.rounded else rows,)
        ctx.save_for_backward(*kept, record, h, weight, a, b)
        ctx.scale = scale
        ctx.in_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[Any, ...]:
        *kept, record, h, weight, a, b = ctx.saved_tensors
        n = h.shape[0]
        g = grad.reshape(-1, grad.shape[-1])  # (N, out)
        gh = (g @ b).mul_(ctx.scale)  # (N, r): gradient at the adapter's rank-r intermediate
        grad_a = grad_b = grad_x = None
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ h).mul_(ctx.scale)  # (out, r)
        if ctx.needs_input_grad[3]:
            if ctx.factors:  # the gated MLP's product again, as _SwiGLU computed it (a fresh tensor)
                gate, up = kept
                dropped = nn.functional.silu(gate).mul_(up).reshape(n, -1)
            elif ctx.rounded:
                dropped = kept[0][:n].float()  # the padded bf16 rows, back to float32 (a fresh tensor)
            else:
                rows = kept[0]
                dropped = rows if record is None else rows.clone(memory_format=torch.contiguous_format)
            if record is not None:
                zero_dropped(dropped, record)
            grad_a = gh.t() @ dropped  # (r, in)
        if ctx.needs_input_grad[0]:
            grad_x = frozen_input_grad(g, weight)  # (N, in) through the frozen weight
            if record is None:
                grad_x.addmm_(gh, a)
            else:
                grad_x.add_(zero_dropped(gh @ a, record))
            grad_x = grad_x.view(ctx.in_shape)
        return grad_x, None, None, grad_a, grad_b, None, None


class FusedLoraLinear(LoraLinear):
    """peft's LoRA ``Linear`` whose plain single-adapter forward runs as :class:`_FusedLoraFunction`."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        plan = self._fused_plan(x, args, kwargs)
        if plan is None:
            return super().forward(x, *args, **kwargs)
        name, p = plan
        base = self.base_layer
        return _FusedLoraFunction.apply(x, base.weight, base.bias, self.lora_A[name].weight,
                                        self.lora_B[name].weight, float(self.scaling[name]), p)

    def _fused_plan(self, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, float] | None:
        """The active adapter and its dropout rate when the fused path computes exactly peft's forward."""
        if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        name = self.active_adapters[0]
        if name not in self.lora_A or name in self.lora_variant or torch.is_autocast_enabled(x.device.type):
            return None
        a, b, base = self.lora_A[name], self.lora_B[name], self.base_layer
        if a.bias is not None or b.bias is not None or x.dtype != a.weight.dtype or base.weight.requires_grad:
            return None
        if base.bias is not None and base.bias.requires_grad:
            return None
        drop = self.lora_dropout[name]
        if isinstance(drop, nn.Dropout):  # unfolded dropout: fused only when it does nothing
            return (name, 0.0) if drop.p == 0 or not self.training else None
        if isinstance(a, DropoutLoraA) and self.training:
            return name, a.dropout_p
        return name, 0.0


def fuse_lora(model: nn.Module) -> list[nn.Module]:
    """Switch every peft LoRA ``Linear`` over a plain ``nn.Linear`` to the fused forward; returns them."""
    fused = []
    for module in model.modules():
        if type(module) is LoraLinear and isinstance(module.base_layer, nn.Linear):
            module.__class__ = FusedLoraLinear
            fused.append(module)
    return fused


def unfuse_lora(modules: list[nn.Module]) -> None:
    """Undo :func:`fuse_lora`: the layers are peft's own again."""
    for module in modules:
        if type(module) is FusedLoraLinear:
            module.__class__ = LoraLinear


@contextmanager
def fused_lora(model: nn.Module, enabled: bool) -> Iterator[int]:
    """Within the block, ``model``'s LoRA layers run fused (when ``enabled``); yields how many."""
    modules = fuse_lora(model) if enabled else []
    try:
        yield len(modules)
    finally:
        unfuse_lora(modules)
