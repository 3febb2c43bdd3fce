"""DP-SGD: per-example gradient clipping and Gaussian noise, accounted with Opacus.

Abadi et al. (2016, https://arxiv.org/abs/1607.00133): clip each example's gradient to norm ``C``, sum,
add ``N(0, (sigma C)^2)`` noise, and average. Opacus (https://opacus.ai) provides the accountant that turns
(sigma, sampling rate, steps) into (epsilon, delta) and back. The per-example gradients are computed by
running each example of the batch on its own: Opacus' ``GradSampleModule`` hooks do not cover every layer
that transformers and peft build (rotary embeddings, peft's wrapped modules), and this loop works for
every model and method, at the cost of batch-size-1 throughput.

Accounting note: the RDP accountant assumes Poisson sampling at rate batch/N; tuneforge draws shuffled
fixed-size batches, the approximation that most DP fine-tuning code makes (and that Opacus itself makes
without ``poisson_sampling``). The report says so beside the epsilon.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn

from tuneforge.extras import require
from tuneforge.recipe import PrivacyConfig
from tuneforge.tasks.base import Encoded, Task
from tuneforge.train.hooks import TrainHook


@dataclass
class PrivacyPlan:
    noise_multiplier: float
    sample_rate: float
    delta: float
    max_grad_norm: float


def plan_privacy(cfg: PrivacyConfig, n_examples: int, batch: int, steps: int) -> PrivacyPlan:
    get_noise_multiplier = require("opacus.accountants.utils", "DP-SGD (train.privacy)").get_noise_multiplier

    delta = cfg.delta if cfg.delta is not None else 1.0 / (10 * n_examples)
    rate = min(1.0, batch / n_examples)
    sigma = cfg.noise_multiplier
    if sigma is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # opacus' "optimal order is the largest alpha" hint
            sigma = get_noise_multiplier(target_epsilon=cfg.target_epsilon, target_delta=delta, sample_rate=rate,
                                         steps=steps, accountant="rdp")
    return PrivacyPlan(noise_multiplier=float(sigma), sample_rate=rate, delta=delta, max_grad_norm=cfg.max_grad_norm)


def spent(plan: PrivacyPlan, steps: int) -> dict[str, float | str]:
    RDPAccountant = require("opacus.accountants", "DP-SGD (train.privacy)").RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(plan.noise_multiplier, plan.sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epsilon = accountant.get_epsilon(delta=plan.delta)
    return {"epsilon": float(epsilon), "delta": plan.delta, "noise_multiplier": plan.noise_multiplier,
            "max_grad_norm": plan.max_grad_norm, "sample_rate": plan.sample_rate, "steps": steps,
            "accountant": "Opacus RDP; assumes Poisson sampling, batches here are shuffled and fixed-size"}


def private_step(model: nn.Module, task: Task, examples: list[Encoded], plan: PrivacyPlan,
                 accelerator: Accelerator) -> float:
    """Set ``.grad`` of every trainable parameter to the noised mean of clipped per-example gradients.

    Each example's loss is its mean over its answer tokens, so its gradient does not grow with its
    length. Returns the mean (un-noised) loss of the examples.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    summed = [torch.zeros_like(p) for p in params]
    total = 0.0
    for example in examples:
        batch = {k: v.to(accelerator.device) for k, v in task.collate([example]).items()}
        with accelerator.autocast():
            loss_sum, n = task.loss(model, batch, training=True)
        loss = loss_sum / max(n, 1)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = min(1.0, plan.max_grad_norm / (float(norm) + 1e-6))
        for acc, g in zip(summed, grads):
            acc.add_(g, alpha=scale)
        total += float(loss.detach())
    std = plan.noise_multiplier * plan.max_grad_norm
    for p, acc in zip(params, summed):
        p.grad = (acc + torch.randn_like(acc) * std) / len(examples)
    return total / len(examples)


class DPSGD(TrainHook):
    """DP-SGD as a step hook: each step's gradients are the noised mean of clipped per-example gradients."""

    label = "DP-SGD"
    one_process = True  # the noise is drawn once per step; several processes would each add their own
    computes_gradients = True

    def __init__(self, plan: PrivacyPlan) -> None:
        self.plan = plan

    @classmethod
    def planned(cls, cfg: PrivacyConfig, n_examples: int, batch: int, steps: int) -> DPSGD:
        """The hook for ``cfg``, its noise set for ``steps`` steps of ``batch`` out of ``n_examples``."""
        return cls(plan_privacy(cfg, n_examples, batch, steps))

    def gradients(self, model: nn.Module, task: Task, examples: list[Encoded], accelerator: Accelerator) -> float:
        return private_step(model, task, examples, self.plan, accelerator)

    def spent(self, steps: int) -> dict[str, float | str]:
        """The privacy budget spent by ``steps`` steps, for the report."""
        return spent(self.plan, steps)
