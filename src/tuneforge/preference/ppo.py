"""Proximal policy optimisation for language models: the maths, as small functions on padded tensors.

PPO (Schulman et al. 2017, https://arxiv.org/abs/1707.06347) as RLHF uses it (Ziegler et al. 2019,
https://arxiv.org/abs/1909.08593; Ouyang et al. 2022, InstructGPT): one rollout of sampled completions is
reused for several epochs of minibatch updates, which is safe because the policy's step is clipped:

- per-token reward: the KL penalty to the reference, ``-beta * (log pi_old - log pi_ref)`` at every completion
  token, plus the sequence's reward at its last token (``kl_shaped_rewards``);
- advantages by generalised advantage estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438):
  ``delta_t = r_t + gamma V_{t+1} - V_t``, ``A_t = sum_k (gamma lambda)^k delta_{t+k}``, ``V`` after the last
  token 0; the value targets are ``A_t + V_t`` (``gae``);
- the clipped surrogate: ``-min(rho A, clip(rho, 1 - eps, 1 + eps) A)`` with ``rho = pi / pi_old``
  (``clipped_surrogate``), and the clipped value loss ``0.5 max((V - R)^2, (clip(V, V_old +- eps_v) - R)^2)``
  (``clipped_value_loss``).

Shapes: ``S`` completions, ``T`` the longest completion; ``mask`` ``(S, T)`` is 1 on real tokens, and every
per-token tensor is ``(S, T)`` with zeros on padding. Means over tokens are over the masked tokens.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (a scalar)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` standardised over the masked tokens (zero mean, unit variance), zeros kept on padding."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_shaped_rewards(logp_old: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor,
                      beta: float) -> torch.Tensor:
    """Per-token rewards ``(S, T)``: ``-beta * (logp_old - ref_logp)`` everywhere, plus ``rewards`` ``(S,)`` at
    each completion's last real token.

    >>> kl_shaped_rewards(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]]), torch.tensor([3.0]),
    ...                   torch.tensor([[1.0, 1.0]]), beta=0.1)
    tensor([[-0.0500,  3.0000]])
    """
    per_token = -beta * (logp_old - ref_logp) * mask  # (S, T)
    last = mask.sum(-1).long().clamp(min=1) - 1  # (S,)
    return per_token.scatter_add(1, last.unsqueeze(1), rewards.to(per_token.dtype).unsqueeze(1))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets ``(S, T)`` by generalised advantage estimation, right to left.

    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 1.0, 0.5)
    >>> adv, ret   # delta = [0 + 0.25 - 0.5, 1 + 0 - 0.25] = [-0.25, 0.75]; A_0 = -0.25 + 0.5 * 0.75
    (tensor([[0.1250, 0.7500]]), tensor([[0.6250, 1.0000]]))
    """
    s, t = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(s, dtype=rewards.dtype, device=rewards.device)  # (S,)
    next_value = torch.zeros(s, dtype=rewards.dtype, device=rewards.device)  # V after the last token: 0
    for i in reversed(range(t)):
        m = mask[:, i]
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        running = (delta + gamma * lam * running) * m  # padding restarts the sum: it lies after the end
        advantages[:, i] = running
        next_value = values[:, i] * m
    return advantages, (advantages + values) * mask


def clipped_surrogate(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The PPO policy loss (a scalar, to minimise) and the share of tokens whose ratio was clipped.

    >>> loss, frac = clipped_surrogate(torch.log(torch.tensor([[1.5, 0.5]])), torch.zeros(1, 2),
    ...                                torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), clip=0.2)
    >>> loss, frac   # min(1.5, 1.2) = 1.2 and min(0.5, 0.8) = 0.5: -(1.2 + 0.5) / 2
    (tensor(-0.8500), tensor(1.))
    """
    ratio = torch.exp(logp - logp_old)  # (S, T)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask)
    fraction = masked_mean(((ratio - 1).abs() > clip).to(logp.dtype), mask)
    return loss, fraction.detach()


def clipped_value_loss(values: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float = 0.2) -> torch.Tensor:
    """``0.5 * max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)``, averaged over the masked tokens.

    >>> clipped_value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1))
    tensor(0.3200)
    """
    clipped = values_old + (values - values_old).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


class ValueHead(nn.Module):
    """``V(s_t)``: one linear layer from the policy's last hidden state at each token to a scalar."""

    def __init__(self, hidden: int, seed: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # small and seeded: the first values are near 0, the same on every run
            self.linear.weight.copy_(torch.randn(1, hidden, generator=generator) * (1.0 / hidden))
            self.linear.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1)  # (..., H) -> (...)
