"""Elastic weight consolidation (Kirkpatrick et al. 2017, https://arxiv.org/abs/1612.00796).

EWC adds ``lambda/2 * sum_i F_i (w_i - w*_i)^2`` to the loss: a pull back to the pre-trained weights ``w*``,
strongest where the diagonal Fisher information ``F`` on general text says a weight matters.

Two choices differ from the textbook version, both because of what was measured on SmolLM2 (bench/methods.py,
slots suite): the first implementation penalised the trainable parameters themselves and changed nothing
(field F1, exact match and general perplexity identical to plain LoRA to three decimals).

- **Adapters are judged by the weight they change.** A LoRA layer computes ``(W + s * B @ A) x``; its own
  parameters start at ``B = 0``, where every gradient on ``A`` is zero, so a Fisher on ``A`` and ``B`` is zero
  or tiny and says nothing about what the update does to the network. Here the Fisher is estimated on the
  frozen ``W`` (the weight the general-text loss actually depends on) and the penalty is
  ``sum F_W * (s * B @ A)^2``, the textbook EWC of the merged model. Other trainable parameters (full
  fine-tuning, IA3 vectors, DoRA magnitudes, soft prompts) keep the plain parameter-wise penalty.
- **The empirical Fisher is a mean of per-sequence squared gradients**, as defined, not the square of a
  batch-mean gradient (which shrinks it by roughly the batch size wherever gradients disagree).

The penalty's gradient is taken one layer at a time (``backward``), so the ``B @ A`` products, each as large
as the weight it adapts, never all sit in memory at once. The Fisher itself holds one float per penalised
weight (for LoRA on every linear layer of SmolLM2-135M, about 420 MB); EWC is the guard that costs memory,
rehearsal the one that costs time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from tuneforge.recipe import EWCConfig
from tuneforge.tasks.base import Encoded, Task, collate_causal, pad_id
from tuneforge.train.hooks import TrainHook


@dataclass
class _Adapted:
    """One LoRA layer: the frozen weight's Fisher, how to compute its update, and the update at the start."""

    fisher: torch.Tensor
    delta: Callable[[], torch.Tensor]
    anchor: torch.Tensor | None = None  # None: the adapter started at zero (B = 0), as LoRA does

    def moved(self) -> torch.Tensor:
        delta = self.delta()
        return delta if self.anchor is None else delta - self.anchor


@dataclass
class EWCPenalty:
    weight: float
    params: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # name -> (Fisher, anchor)
    adapted: dict[str, _Adapted] = field(default_factory=dict)
    last: float = 0.0  # the value of the latest backward, for the training log

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """The penalty as one differentiable scalar (for inspection; training uses ``backward``)."""
        terms = list(self._terms(model))
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def backward(self, model: nn.Module, backward: Callable[[torch.Tensor], None]) -> float:
        """Add the penalty's gradient term by term; return its value."""
        total = 0.0
        for term in self._terms(model):
            if term.requires_grad:
                backward(term)
            total += float(term.detach())
        self.last = total
        return total

    def _terms(self, model: nn.Module) -> Iterator[torch.Tensor]:
        half = self.weight / 2
        named = dict(model.named_parameters())
        for name, (fisher, anchor) in self.params.items():
            yield half * (fisher * (named[name] - anchor) ** 2).sum()
        for layer in self.adapted.values():
            yield half * (layer.fisher * layer.moved() ** 2).sum()


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """LoRA layers with a trainable active adapter, by module name."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a dependency; this only guards odd installs
        return {}
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and module.active_adapters:
            adapter = module.active_adapters[0]
            if adapter in module.lora_A and module.lora_A[adapter].weight.requires_grad:
                found[name] = module
    return found


def _adapted(module: nn.Module, fisher: torch.Tensor) -> _Adapted:
    adapter = module.active_adapters[0]
    layer = _Adapted(fisher, lambda: module.get_delta_weight(adapter))
    with torch.no_grad():
        start = layer.delta().detach()
    layer.anchor = start if bool(start.any()) else None  # a staged or resumed adapter starts where it stands
    return layer


def _sequences(chunks: list[Encoded], cfg: EWCConfig, batch_size: int) -> list[Encoded]:
    return chunks[: max(1, min(len(chunks), cfg.batches * batch_size))]


def ewc_penalty(model: nn.Module, task: Task, chunks: list[Encoded], cfg: EWCConfig, batch_size: int) -> EWCPenalty:
    """Estimate the diagonal Fisher on general text (one sequence at a time) and return the penalty."""
    lora = _lora_layers(model)
    adapter_params = {id(p) for m in lora.values() for sub in (m.lora_A, m.lora_B, m.lora_embedding_A,
                                                                m.lora_embedding_B) for p in sub.parameters()}
    plain = {n: p for n, p in model.named_parameters() if p.requires_grad and id(p) not in adapter_params}
    frozen = {name: m.get_base_layer().weight for name, m in lora.items()}
    targets = {**{("param", n): p for n, p in plain.items()}, **{("lora", n): w for n, w in frozen.items()}}
    if not targets:
        return EWCPenalty(weight=cfg.weight)  # nothing trains, nothing to pull back
    fisher = {key: torch.zeros_like(p) for key, p in targets.items()}
    was_training = model.training
    flags = {name: w.requires_grad for name, w in frozen.items()}
    model.eval()  # no dropout in the estimate
    device = next(model.parameters()).device
    sequences = _sequences(chunks, cfg, batch_size)
    try:
        for w in frozen.values():
            w.requires_grad_(True)
        for seq in sequences:
            batch = {k: v.to(device) for k, v in collate_causal([seq], pad_id(task.tokenizer)).items()}
            model.zero_grad(set_to_none=True)
            loss, n = task.loss(model, batch)
            (loss / max(n, 1)).backward()
            for key, p in targets.items():
                if p.grad is not None:
                    fisher[key] += p.grad.detach() ** 2 / len(sequences)
    finally:
        for name, w in frozen.items():
            w.grad = None
            w.requires_grad_(flags[name])
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return EWCPenalty(
        weight=cfg.weight,
        params={n: (fisher[("param", n)], p.detach().clone()) for n, p in plain.items()},
        adapted={n: _adapted(m, fisher[("lora", n)]) for n, m in lora.items()},
    )


class EWCHook(TrainHook):
    """EWC as a step hook: the Fisher from the untouched model, the penalty's gradient added every step.

    The penalty is built in ``on_start``, before a resume loads a checkpoint, so a resumed run pulls
    back to the same anchor as the straight one.
    """

    label = "the EWC penalty"
    one_process = True  # the layer-by-layer backward bypasses DDP's gradient averaging

    def __init__(self, task: Task, chunks: list[Encoded], cfg: EWCConfig, batch_size: int) -> None:
        self.task, self.chunks, self.cfg, self.batch_size = task, chunks, cfg, batch_size
        self.penalty = EWCPenalty(weight=cfg.weight)

    def on_start(self, model: nn.Module) -> None:
        self.penalty = ewc_penalty(model, self.task, self.chunks, self.cfg, self.batch_size)

    def on_backward(self, model: nn.Module, backward: Callable[[torch.Tensor], None]) -> float:
        return self.penalty.backward(model, backward)

    def on_step_end(self, step: int) -> dict[str, float]:
        return {"ewc_penalty": self.penalty.last}
