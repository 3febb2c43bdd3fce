"""Activations saved for backward kept in bfloat16 inside the transformer blocks: less activation memory.

Why: with LoRA on a small decoder, most of a training step's memory above the weights is what the
forward pass saves for backward (about 1.3 MB a token for SmolLM2-135M, bench/RESULTS.md), and 60% of
it is the MLP's 1536-wide tensors. Rounding a saved float32 tensor to bfloat16 halves it. The forward
pass still computes in float32; only the copy kept for backward is rounded, and backward computes in
float32 from it. This is activation compression in its simplest form (as in ActNN, Chen et al. 2021,
and the ``saved_tensors_hooks`` example of the PyTorch docs), at 8 bits of mantissa.

What stays float32:

* weights (a frozen weight saved by a linear layer is the parameter itself, not a copy);
* small tensors (masks, norms' scale factors);
* everything the attention kernel saves (:func:`full_precision`): its backward recomputes the softmax
  from the saved query, key and log-sum-exp, where rounding would not stay small;
* anything outside the transformer blocks (embeddings, final norm, loss).

A tensor saved by several layers (the normed input of q, k and v) is rounded once and shared.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

MIN_ELEMENTS = 4096  # below this the bookkeeping costs more than the memory saved
_depth = 0  # > 0 while some block's forward compacts what it saves
_full = 0  # > 0 inside full_precision(): what is saved there stays float32


class _Packer:
    def __init__(self, model: nn.Module) -> None:
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.shared: dict[int, tuple[weakref.ref, _Rounded]] = {}  # id(original) -> (original, its rounded copy)

    def pack(self, t: torch.Tensor) -> Any:
        if (t.dtype != torch.float32 or t.numel() < MIN_ELEMENTS or t.device.type == "meta"
                or t.untyped_storage().data_ptr() in self.weights):
            return t
        hit = self.shared.get(id(t))
        if hit is not None and hit[0]() is t:
            return hit[1]
        packed = _Rounded(t.to(torch.bfloat16))
        self.shared[id(t)] = (weakref.ref(t), packed)
        return packed

    @staticmethod
    def unpack(saved: Any) -> torch.Tensor:
        return saved.tensor.float() if isinstance(saved, _Rounded) else saved

    def forget(self) -> None:
        self.shared.clear()


class _Rounded:
    """A saved tensor rounded to bf16 (a wrapper, so a tensor that was bf16 already is never up-cast)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def _blocks(model: nn.Module) -> list[nn.Module]:
    from tuneforge.methods.base import transformer_blocks

    return list(transformer_blocks(model)[1])


@contextmanager
def compact_saved_activations(model: nn.Module, enabled: bool) -> Iterator[None]:
    """For the duration, every transformer block saves its activations for backward in bf16."""
    if not enabled:
        yield
        return
    packer = _Packer(model)
    stacks: dict[int, ExitStack] = {}

    def enter(module: nn.Module, args: Any) -> None:
        global _depth
        if not (module.training and torch.is_grad_enabled()):
            return
        stack = ExitStack()
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(packer.pack, packer.unpack))
        stacks[id(module)] = stack
        _depth += 1

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        global _depth
        stack = stacks.pop(id(module), None)
        if stack is not None:
            stack.close()
            _depth -= 1
            if _depth == 0:
                packer.forget()  # the next forward's tensors are new; the packed ones live in the graph

    handles = []
    for block in _blocks(model):
        handles.append(block.register_forward_pre_hook(enter))
        handles.append(block.register_forward_hook(leave))
    global _depth, _full
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for stack in stacks.values():  # a forward that raised inside a block
            stack.close()
        stacks.clear()
        _depth = 0
        _full = 0


def rounds_when_saved(t: torch.Tensor) -> bool:
    """Whether the activation ``t``, saved for backward here, would be kept as bf16 (a layer may then save
    its own bf16 copy of it, already made for another use, instead)."""
    return _depth > 0 and _full == 0 and t.dtype == torch.float32 and t.numel() >= MIN_ELEMENTS


@contextmanager
def full_precision() -> Iterator[None]:
    """Inside a compacting block, save what follows in float32 (the attention kernel)."""
    global _full
    if _depth == 0:
        yield
        return
    _full += 1
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            yield
    finally:
        _full -= 1
