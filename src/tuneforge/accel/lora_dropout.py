"""LoRA dropout folded into the ``A`` projection: the same regulariser, a fraction of the time and memory.

Why: peft applies ``lora_dropout`` as ``lora_B(lora_A(dropout(x)))``. On a CPU, ``nn.Dropout`` draws one
Bernoulli number per input element with a slow generator, then multiplies by a float mask; for
SmolLM2-135M with LoRA on all seven linear layers that was 17-20% of a training step in the profile
(``bench/RESULTS.md``), more than attention. The dropped input is also a fresh tensor that ``lora_A``
keeps for its backward pass, once per adapted layer, although q/k/v (and gate/up) share one input.

Here ``lora_A`` itself drops its input, in a small autograd function:

* the keep-mask is drawn as the gaps between dropped positions (geometric, ``~n * p`` draws instead
  of ``n``), which is exactly an independent Bernoulli(``p``) per element, from torch's own generator
  (so seeds, resume and gradient checkpointing's RNG replay behave as before);
* the dropped positions are zeroed in a copy of the input (no full-size mask is built or multiplied)
  and the ``1 / (1 - p)`` scale goes onto the ``r``-wide output, not the input;
* backward keeps the shared input and the dropped positions (smaller than a one-byte mask at low
  rates), and zeroes them again, instead of keeping a dropped copy per layer.

The parameters, their names and peft's adapter files are untouched (``lora_A`` stays an ``nn.Linear``
with the same ``weight``), so saving, merging and loading are peft's own. In eval mode it is the plain
projection. DoRA layers keep peft's path (its variant reads the dropped input itself).
"""

from __future__ import annotations

import math

import torch
from torch import nn

GEOMETRIC_BELOW = 0.25  # above this rate the gap trick draws nearly as many numbers as a plain mask


def draw_dropped(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Which elements of a ``shape`` tensor dropout drops, each independently with probability ``p``.

    The record is what backward keeps: on a CPU at low rates, the sorted flat positions of the dropped
    elements (int32 below 2^31 elements: about ``4 * p`` bytes per element instead of a one-byte mask);
    otherwise a bool keep-mask. :func:`zero_dropped` applies either.

    >>> _ = torch.manual_seed(0)
    >>> ones = torch.ones(100_000)
    >>> round(float(zero_dropped(ones, draw_dropped(ones.shape, 0.1, ones.device)).mean()), 2)
    0.9
    """
    if p >= GEOMETRIC_BELOW or device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    return _dropped_positions(math.prod(shape), p)


def zero_dropped(t: torch.Tensor, record: torch.Tensor) -> torch.Tensor:
    """Zero, in place, the elements of ``t`` (a fresh contiguous tensor of the drawn shape) that
    ``record`` (:func:`draw_dropped`) drops; returns ``t``.

    Why in place on a copy: the positions are written directly (about ``p`` of the elements), so no
    full-size float mask is built and multiplied; on a CPU a bool mask's ``where`` or product ran 2-8x
    slower than a float product, and building the float mask was a pass of its own.
    """
    if record.dtype == torch.bool:
        return t.mul_(record)
    t.view(-1)[record] = 0.0
    return t


def _dropped_positions(n: int, p: float) -> torch.Tensor:
    """Positions of the dropped elements among ``n``: the gaps between successes of a Bernoulli(``p``)
    sequence are i.i.d. geometric, drawn by inversion (``1 + floor(log(1 - u) / log(1 - p))``).

    The uniforms are float32 (the vectorised ``log1p``; float64's was half of the draw's time): their
    2^-24 grid truncates gaps beyond ``-24 log(2) / log(1 - p)`` (324 at ``p = 0.05``), a chance of
    ``2^-24``, and positions are summed in int64. They are returned as int32 when ``n`` allows: half the
    memory kept for backward, and indexing with int32 ran twice as fast (0.22 against 0.42 ms for 34 k
    positions in a 448 x 1536 tensor).
    """
    log_keep = math.log1p(-p)
    expected = n * p
    draw = int(expected + 6 * math.sqrt(expected) + 16)
    ends, last = [], -1
    while last < n:  # rarely more than once: the first draw covers n with overwhelming probability
        u = torch.rand(draw)
        gaps = torch.log1p(u.neg_()).div_(log_keep).floor_().long().add_(1)  # (draw,), each >= 1
        pos = gaps.cumsum_(0).add_(last)  # (draw,): absolute positions of the successes
        ends.append(pos)
        last = int(pos[-1])
    pos = torch.cat(ends) if len(ends) > 1 else ends[0]
    pos = pos[: int(torch.searchsorted(pos, n))]
    return pos.int() if n <= torch.iinfo(torch.int32).max else pos


class _DropoutLinear(torch.autograd.Function):
    """``(x * mask / (1 - p)) @ weight.T`` keeping ``x`` (shared) and the dropped positions for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        record = draw_dropped(x.shape, p, x.device)
        scale = 1.0 / (1.0 - p)
        dropped = zero_dropped(x.clone(memory_format=torch.contiguous_format), record)
        out = torch.nn.functional.linear(dropped, weight).mul_(scale)
        ctx.save_for_backward(x, record, weight)
        ctx.scale = scale
        return out  # (..., r)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, record, weight = ctx.saved_tensors
        g = grad * ctx.scale  # (..., r), in the forward's compute dtype (bf16 under autocast)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = zero_dropped((g @ weight.to(g.dtype)).to(x.dtype).contiguous(), record)  # (..., in)
        if ctx.needs_input_grad[1]:
            dropped = zero_dropped(x.to(g.dtype, copy=True, memory_format=torch.contiguous_format), record)
            grad_w = (g.reshape(-1, g.shape[-1]).t() @ dropped.reshape(-1, x.shape[-1])).to(weight.dtype)  # (r, in)
        return grad_x, grad_w, None


class DropoutLoraA(nn.Linear):
    """peft's ``lora_A`` with the adapter's dropout inside; set on an existing layer by :func:`fold_lora_dropout`."""

    dropout_p: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout_p == 0.0 or self.bias is not None:
            return super().forward(x)
        return _DropoutLinear.apply(x, self.weight, self.dropout_p)


def fold_lora_dropout(model: nn.Module) -> int:
    """Move each vanilla LoRA layer's dropout into its ``lora_A``; returns how many layers changed."""
    changed = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict) or getattr(module, "lora_variant", {}):
            continue
        for name, drop in list(drops.items()):
            a = module.lora_A[name]  # type: ignore[index]
            if isinstance(drop, nn.Dropout) and drop.p > 0 and type(a) is nn.Linear and a.bias is None:
                a.__class__ = DropoutLoraA
                a.dropout_p = float(drop.p)
                drops[name] = nn.Identity()
                changed += 1
    return changed
