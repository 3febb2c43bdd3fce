"""Chunked linear + cross-entropy: the vocabulary projection and its loss without the (N, V) logits.

Why: for a small model the logits are the largest activation of a training step. SmolLM2 has a
49,152-token vocabulary, so 8 rows of 256 tokens make a (2048, 49152) float32 logits tensor of
400 MB, and autograd keeps it, its softmax and its gradient alive at once. Computing logits only at
answer positions (``tasks.base.answer_logits``) already shrinks N; this module also bounds what is
held at any moment to ``chunk`` rows: for each chunk of positions the forward computes the logits,
the summed loss and, right away, the gradients with respect to the hidden states and the head
weight (the softmax minus the target distribution, multiplied back through the head), then frees
the logits. Backward only scales those stored gradients by the incoming scalar. This is the
approach of Liger-Kernel's ``FusedLinearCrossEntropy`` (Hsu et al. 2024,
https://arxiv.org/abs/2410.10989) and of Apple's Cut Cross-Entropy (Wijmans et al. 2024,
https://arxiv.org/abs/2411.09009), written in plain torch: the FLOPs are the same as the plain
path (one projection forward, one or two backward), and no logits are recomputed.

Label smoothing (Szegedy et al. 2016) is kept: with smoothing ``eps`` over ``V`` classes the summed
loss is ``(1 - eps) * nll + eps * (logsumexp - mean(logits))`` and its gradient with respect to the
logits is ``softmax - (1 - eps) * onehot - eps / V``, exactly what ``F.cross_entropy`` computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _chunk_loss_and_grad(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, smoothing: float,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed loss of one chunk and the gradient of that sum with respect to its logits ``(C, V)``."""
    logits = torch.nn.functional.linear(h, weight, bias).float()  # (C, V)
    lse = torch.logsumexp(logits, dim=-1)  # (C,)
    nll = lse - logits.gather(1, targets[:, None]).squeeze(1)  # (C,)
    loss = nll if smoothing == 0.0 else (1.0 - smoothing) * nll + smoothing * (lse - logits.mean(dim=-1))
    if not want_grad:
        return loss.sum(), None
    grad = logits.sub_(lse[:, None]).exp_()  # (C, V): softmax, in place of the logits
    grad[torch.arange(len(targets), device=grad.device), targets] -= 1.0 - smoothing
    if smoothing:
        grad -= smoothing / grad.shape[-1]
    return loss.sum(), grad


class _LinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden_i @ weight.T + bias, target_i)`` with gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk: int, smoothing: float) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        want_grad = need_h or need_w or need_b
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, H)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # (V, H)
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and need_b else None  # (V,)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]  # (C, H)
            loss, grad = _chunk_loss_and_grad(h, weight, bias, targets[start : start + chunk], smoothing, want_grad)
            total += loss
            if grad is None:
                continue
            g = grad.to(hidden.dtype)  # (C, V)
            if grad_h is not None:
                grad_h[start : start + chunk] = g @ weight  # (C, H)
            if grad_w is not None:
                grad_w.addmm_(grad.t(), h.float())  # (V, H) += (V, C) @ (C, H)
            if grad_b is not None:
                grad_b += grad.sum(dim=0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        return (
            None if grad_h is None else grad_h * grad_out.to(grad_h.dtype),
            None if grad_w is None else (grad_w * grad_out).to(w_dtype),
            None if grad_b is None else (grad_b * grad_out).to(b_dtype),
            None, None, None,
        )


def linear_cross_entropy_sum(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, *, chunk: int,
                             label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` without materialising all logits.

    ``hidden`` is ``(N, H)``, ``targets`` ``(N,)``. A plain ``nn.Linear`` head (tied to the input
    embeddings or not) goes through the fused function above; any other head (a LoRA-wrapped
    ``lm_head``, say) runs per chunk under activation checkpointing, so backward also holds one
    chunk of logits at a time, at the price of recomputing the head once.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if type(head) is nn.Linear:
        return _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk, label_smoothing)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]  # (C, H), (C,)
        total = total + checkpoint(_module_chunk_loss, head, h, t, label_smoothing, use_reentrant=False)
    return total


def _module_chunk_loss(head: nn.Module, h: torch.Tensor, t: torch.Tensor, smoothing: float) -> torch.Tensor:
    logits = head(h).float()  # (C, V)
    return torch.nn.functional.cross_entropy(logits, t, reduction="sum", label_smoothing=smoothing)
