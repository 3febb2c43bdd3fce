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

from dataclasses import dataclass

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


# ----------------------------------------------------------------------------- the policy's tokens and values
def answer_logps_values(model: nn.Module, head: ValueHead | None, batch: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Log-probability ``(S, T)`` of each answer token, the value ``(S, T)`` of the state before it, and the mask.

    ``batch`` is a right-padded causal batch (``labels`` ``(S, L)``: answer token ids, a negative id such as
    the tasks' IGNORE elsewhere). The
    value reads the last hidden state at the position that predicts the token, detached: the value loss
    trains the head only, and the policy's gradient is the surrogate's alone.
    """
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                output_hidden_states=head is not None)
    targets = batch["labels"][:, 1:]  # (S, L - 1): the token each position predicts
    keep = targets >= 0  # (S, L - 1): token ids are never negative
    logits = out.logits[:, :-1][keep]  # (N, V)
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1)  # (N,)
    mask = _left_aligned(keep)  # (S, T)
    logp = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask.bool(), picked)
    if head is None:
        return logp, None, mask
    hidden = out.hidden_states[-1][:, :-1][keep].detach().float()  # (N, H)
    values = torch.zeros_like(logp).masked_scatter(mask.bool(), head(hidden))  # (S, T)
    return logp, values, mask


def _left_aligned(keep: torch.Tensor) -> torch.Tensor:
    """``(S, T)`` float mask with each row's count of kept positions, from the left (T = the largest count)."""
    counts = keep.sum(-1)  # (S,)
    width = int(counts.max()) if counts.numel() else 0
    return (torch.arange(width, device=keep.device) < counts.unsqueeze(-1)).float()


# ----------------------------------------------------------------------------- rollouts and minibatch updates
@dataclass
class Rollout:
    """One batch of sampled completions and everything PPO fixes before updating on it."""

    batch: dict[str, torch.Tensor]  # the causal batch of prompt + completion rows (S, L)
    logp_old: torch.Tensor  # (S, T)
    values_old: torch.Tensor  # (S, T)
    advantages: torch.Tensor  # (S, T), whitened
    returns: torch.Tensor  # (S, T)
    mask: torch.Tensor  # (S, T)


@dataclass
class PPOSettings:
    """The knobs of one PPO run (``rl.ppo_*`` and ``rl.beta``)."""

    beta: float
    epochs: int = 4
    minibatches: int = 2
    clip: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    value_lr: float = 1e-3
    seed: int = 0


class PPOLearner:
    """PPO inside the one loop: each ``loss`` call is one optimizer step on one minibatch of the current rollout.

    A rollout is drawn when the last one is spent: ``sample`` gives the completions' causal batch and their
    rewards, ``reference`` the adapter-off log-probabilities (``None`` without a KL penalty). Then every rollout
    serves ``epochs * minibatches`` steps, each on a seeded shuffle's next share of its completions; the loop's
    own batches in between are not sampled from (count steps accordingly: a rollout per that many steps).
    The value head trains beside the policy with its own AdamW (``value_lr``) on the detached hidden states,
    and is not checkpointed: a resumed run starts it afresh.
    """

    def __init__(self, settings: PPOSettings) -> None:
        self.s = settings
        self.head: ValueHead | None = None
        self.head_opt: torch.optim.Optimizer | None = None
        self.rollout: Rollout | None = None
        self.queue: list[torch.Tensor] = []
        self.rollouts = 0

    def _ensure_head(self, model: nn.Module, device: torch.device) -> ValueHead:
        if self.head is None:
            self.head = ValueHead(int(model.config.hidden_size), seed=self.s.seed).to(device)
            self.head_opt = torch.optim.AdamW(self.head.parameters(), lr=self.s.value_lr)
        return self.head

    @torch.no_grad()
    def collect(self, model: nn.Module, batch: dict[str, torch.Tensor], rewards: torch.Tensor,
                reference: torch.Tensor | None) -> Rollout:
        """Fix the rollout: old log-probabilities and values, KL-shaped rewards, GAE advantages and returns."""
        head = self._ensure_head(model, batch["input_ids"].device)
        was_training = model.training
        model.eval()  # the same numbers the update's ratio starts from (no dropout draw in either)
        try:
            logp_old, values_old, mask = answer_logps_values(model, head, batch)
        finally:
            model.train(was_training)
        assert values_old is not None
        ref = logp_old if reference is None else reference
        token_rewards = kl_shaped_rewards(logp_old, ref, rewards.to(logp_old.device), mask, self.s.beta)
        advantages, returns = gae(token_rewards, values_old, mask, self.s.gamma, self.s.lam)
        self.rollout = Rollout(batch, logp_old, values_old, whiten(advantages, mask), returns, mask)
        generator = torch.Generator().manual_seed(self.s.seed + self.rollouts)
        n = batch["input_ids"].shape[0]
        self.queue = [part for _ in range(self.s.epochs)
                      for part in torch.randperm(n, generator=generator).chunk(self.s.minibatches)]
        self.rollouts += 1
        return self.rollout

    @property
    def needs_rollout(self) -> bool:
        return not self.queue

    def step(self, model: nn.Module) -> tuple[torch.Tensor, int, dict[str, float]]:
        """The next minibatch's clipped surrogate (summed over its completions) and the value head's update."""
        r = self.rollout
        assert r is not None and self.queue and self.head is not None and self.head_opt is not None
        rows = self.queue.pop(0).to(r.mask.device)
        width = int(r.batch["attention_mask"][rows].sum(-1).max())  # right padding beyond it is dropped
        sub = {k: v[rows, :width] for k, v in r.batch.items()}
        logp, values, mask = answer_logps_values(model, self.head, sub)
        t = mask.shape[1]
        old = {name: getattr(r, name)[rows, :t] for name in ("logp_old", "values_old", "advantages", "returns")}
        policy, clipped = clipped_surrogate(logp, old["logp_old"], old["advantages"], mask, self.s.clip)
        assert values is not None
        value_loss = clipped_value_loss(values, old["values_old"], old["returns"], mask, self.s.value_clip)
        self.head_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.head_opt.step()
        approx_kl = masked_mean(old["logp_old"] - logp.detach(), mask)
        stats = {"clip_fraction": float(clipped), "value_loss": float(value_loss.detach()),
                 "approx_kl_old": float(approx_kl)}
        return policy * len(rows), len(rows), stats
