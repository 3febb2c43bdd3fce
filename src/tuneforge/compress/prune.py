"""Pruning with ``torch.nn.utils.prune``, an optional short recovery fine-tune, then the masks made permanent.

* ``prune-magnitude``: global L1 unstructured pruning (Han et al. 2015,
  https://arxiv.org/abs/1506.02626) of every linear weight inside the transformer blocks; the
  ``sparsity`` share of the smallest weights, ranked across all blocks together, becomes zero.
  Embeddings and the task head are kept. The weights stay dense tensors, so size and latency do
  not change on CPU without sparse kernels; the report says so rather than pretend.
* ``prune-structured``: removes the ``sparsity`` share of the feed-forward neurons of every block
  (L2 norm of each neuron's input weights, ``prune.ln_structured``; for a gated FFN, Llama's
  ``gate_proj``, the first input projection, decides and ``up_proj`` follows its mask). After
  recovery the zeroed neurons are cut out of the matrices and ``config.intermediate_size``
  shrinks, so the saved model is smaller and faster, and it loads from its own config.

Recovery fine-tuning reuses the one training loop (``tuneforge.train.loop.fit``) on the run's
own training split, training every weight while the pruning masks hold pruned weights at zero
(the masks are forward pre-hooks, so their gradient is masked too).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.nn.utils import prune

from tuneforge.compress.base import COMPRESSORS, Compressor, Context
from tuneforge.errors import UserError
from tuneforge.methods import get_method
from tuneforge.methods.base import transformer_blocks
from tuneforge.methods.full import FullMethod
from tuneforge.run.folder import RunDir
from tuneforge.train.loop import fit


def block_linears(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every ``nn.Linear`` inside the transformer blocks, as ``(module, "weight")`` pairs."""
    _, blocks = transformer_blocks(model)
    return [(m, "weight") for m in blocks.modules() if isinstance(m, nn.Linear)]


def recover(model: nn.Module, ctx: Context, steps: int, lr: float) -> dict[str, Any]:
    """A short full fine-tune of ``model`` on the run's training split with the training loop."""
    task = ctx.task
    train = [e for e in (task.encode(x) for x in ctx.train) if e.n_answer > 0]
    if not train:
        raise UserError("the run's training split is empty, so there is nothing to recover on; "
                        "use --recovery-steps 0")
    cfg = ctx.recipe.train.model_copy(update={"max_steps": steps, "epochs": None, "lr": lr, "early_stopping": None,
                                              "eval_every": None, "warmup_steps": 0, "keep_checkpoints": 1})
    get_method(FullMethod()).prepare(model, task.head)  # every weight trains (adapters are merged already)
    scratch = Path(tempfile.mkdtemp(prefix="tuneforge-recovery-"))
    try:
        state = fit(model=model, task=task, method=get_method(FullMethod()), train=train, validate=None, cfg=cfg,
                    run=RunDir(scratch), accelerator=Accelerator(cpu=True), resume=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return {"steps": state.step, "seconds": round(state.seconds, 1), "lr": lr, "tokens": state.tokens}


def _zero_fraction(pairs: list[tuple[nn.Module, str]]) -> float:
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in pairs)
    return zeros / max(1, sum(getattr(m, n).numel() for m, n in pairs))


@COMPRESSORS.register("prune-magnitude")
class MagnitudePrune(Compressor):
    """Global L1 unstructured pruning of the block weights."""

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        pairs = block_linears(model)
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=self.cfg.sparsity)
        self.recovery = recover(model, ctx, self.cfg.recovery_steps, self.cfg.recovery_lr) \
            if self.cfg.recovery_steps else None
        for module, name in pairs:
            prune.remove(module, name)  # weight = weight_orig * mask, hooks gone
        return model

    def summary(self, model: nn.Module) -> dict[str, Any]:
        return {"block_weight_sparsity": round(_zero_fraction(block_linears(model)), 4),
                "recovery": getattr(self, "recovery", None),
                "note": "zeros are stored densely: no size or speed change without sparse kernels"}


def ffn_layers(block: nn.Module, intermediate: int) -> tuple[list[str], str]:
    """Names of a block's FFN input projections (``hidden -> intermediate``) and its output projection."""
    linears = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
    ins = [n for n, m in linears.items() if m.out_features == intermediate and m.in_features != intermediate]
    outs = [n for n, m in linears.items() if m.in_features == intermediate and m.out_features != intermediate]
    if not ins or len(outs) != 1:
        raise UserError(f"cannot find the feed-forward layers of {type(block).__name__} (width {intermediate}): "
                        f"inputs {ins}, outputs {outs}; prune-structured supports BERT- and Llama-style blocks")
    return ins, outs[0]


def _shrink(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` keeping only the rows (dim 0) or columns (dim 1) in ``keep``."""
    weight = linear.weight.detach().index_select(dim, keep)  # (out', in) or (out, in')
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach()[keep] if dim == 0 else linear.bias.detach())
    return new


@COMPRESSORS.register("prune-structured")
class StructuredPrune(Compressor):
    """Removes whole feed-forward neurons, the same number in every block."""

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        intermediate = model.config.intermediate_size
        _, blocks = transformer_blocks(model)
        plan = []
        for block in blocks:
            ins, out = ffn_layers(block, intermediate)
            first = block.get_submodule(ins[0])
            prune.ln_structured(first, "weight", amount=self.cfg.sparsity, n=2, dim=0)
            rows = first.weight_mask[:, 0].clone()  # (intermediate,) 1 = kept neuron
            for name in ins[1:]:
                module = block.get_submodule(name)
                prune.custom_from_mask(module, "weight", rows[:, None].expand(-1, module.in_features))
            for name in ins:
                if block.get_submodule(name).bias is not None:
                    prune.custom_from_mask(block.get_submodule(name), "bias", rows)
            prune.custom_from_mask(block.get_submodule(out), "weight",
                                   rows[None, :].expand(block.get_submodule(out).out_features, -1))
            plan.append((block, ins, out, rows))
        self.recovery = recover(model, ctx, self.cfg.recovery_steps, self.cfg.recovery_lr) \
            if self.cfg.recovery_steps else None
        kept = None
        for block, ins, out, rows in plan:
            for module in [block.get_submodule(n) for n in (*ins, out)]:
                for param in ("weight", "bias"):
                    if prune.is_pruned(module) and hasattr(module, f"{param}_mask"):
                        prune.remove(module, param)
            keep = rows.nonzero().squeeze(1)  # (kept,)
            kept = len(keep)
            for name in ins:
                _replace(block, name, _shrink(block.get_submodule(name), keep, 0))
            _replace(block, out, _shrink(block.get_submodule(out), keep, 1))
        model.config.intermediate_size = kept
        self.sizes = {"intermediate_size": [intermediate, kept]}
        return model

    def summary(self, model: nn.Module) -> dict[str, Any]:
        return {**getattr(self, "sizes", {}), "recovery": getattr(self, "recovery", None)}


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)
