"""PPO maths against hand computations and naive loops: KL-shaped rewards, GAE, the clipped surrogate, the value
loss; and the clipping's effect on gradients."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.preference.ppo import (ValueHead, clipped_surrogate, clipped_value_loss, gae, kl_shaped_rewards,
                                      masked_mean, whiten)


def naive_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """The textbook recursion on one unpadded sequence."""
    adv, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_v = values[t + 1] if t + 1 < len(values) else 0.0
        running = rewards[t] + gamma * next_v - values[t] + gamma * lam * running
        adv[t] = running
    return adv, [a + v for a, v in zip(adv, values)]


def test_gae_by_hand_and_against_the_textbook_recursion_with_padding() -> None:
    # by hand, gamma 0.9, lambda 0.8: V = [1, 2, 0.5], r = [0, 0, 1]
    # delta_2 = 1 - 0.5 = 0.5; delta_1 = 0 + 0.9 * 0.5 - 2 = -1.55; delta_0 = 0 + 0.9 * 2 - 1 = 0.8
    # A_2 = 0.5; A_1 = -1.55 + 0.72 * 0.5 = -1.19; A_0 = 0.8 + 0.72 * -1.19 = -0.0568
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 2.0, 0.5]]), torch.ones(1, 3), 0.9, 0.8)
    assert adv[0].tolist() == pytest.approx([-0.0568, -1.19, 0.5])
    assert ret[0].tolist() == pytest.approx([0.9432, 0.81, 1.0])
    g = torch.Generator().manual_seed(0)
    lengths = [5, 2, 4]
    r, v = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths])
    adv, ret = gae(r * mask, v * mask, mask, 0.95, 0.9)
    for i, n in enumerate(lengths):
        want_a, want_r = naive_gae(r[i, :n].tolist(), v[i, :n].tolist(), 0.95, 0.9)
        assert adv[i, :n].tolist() == pytest.approx(want_a, abs=1e-6)
        assert ret[i, :n].tolist() == pytest.approx(want_r, abs=1e-6)
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0


def test_kl_shaped_rewards_put_the_reward_on_each_last_token() -> None:
    logp_old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -3.0, 0.0]])
    ref = torch.tensor([[-1.2, -0.8, -1.0], [-2.5, -3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    out = kl_shaped_rewards(logp_old, ref, torch.tensor([1.0, -2.0]), mask, beta=0.5)
    # -0.5 * (old - ref): [-0.1, 0.1, 0], [-0.25, 0, pad]; + reward at positions 2 and 1
    assert torch.allclose(out, torch.tensor([[-0.1, 0.1, 1.0], [-0.25, -2.0, 0.0]]))


def test_clipped_surrogate_by_hand_and_its_gradient_stops_outside_the_clip() -> None:
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.1, 1.5, 0.5, 0.7]])
    adv = torch.tensor([[2.0, 1.0, 1.0, -1.0]])
    logp = torch.log(ratios).requires_grad_(True)
    loss, frac = clipped_surrogate(logp, old, adv, torch.ones(1, 4), clip=0.2)
    # min(rho A, clip(rho) A): 2.2; min(1.5, 1.2) = 1.2; min(0.5, 0.8) = 0.5; min(-0.7, -0.8) = -0.8
    assert loss.item() == pytest.approx(-(2.2 + 1.2 + 0.5 - 0.8) / 4)
    assert frac.item() == pytest.approx(3 / 4)
    loss.backward()
    grad = logp.grad[0].tolist()
    # d/dlogp of -rho A / 4 = -rho A / 4 where the unclipped term is the minimum; 0 where the clipped one is
    assert grad == pytest.approx([-1.1 * 2 / 4, 0.0, -0.5 / 4, 0.0])


def test_value_loss_by_hand() -> None:
    values = torch.tensor([[1.0, 0.0, 0.5]])
    old = torch.tensor([[0.5, 0.0, 0.5]])
    returns = torch.tensor([[2.0, 1.0, 0.0]])
    # token 0: clipped V = 0.7: max(1, 1.69) = 1.69; token 1: 1; token 2: 0.25 -> 0.5 * mean
    assert clipped_value_loss(values, old, returns, torch.ones(1, 3), clip=0.2).item() == pytest.approx(
        0.5 * (1.69 + 1 + 0.25) / 3)
    pad = torch.tensor([[1.0, 1.0, 0.0]])
    assert clipped_value_loss(values, old, returns, pad, clip=0.2).item() == pytest.approx(0.5 * (1.69 + 1) / 2)


def test_whiten_and_value_head() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6) and w[0, 3] == 0
    assert masked_mean(w ** 2, mask).item() == pytest.approx(1.0, rel=1e-5)
    head = ValueHead(8, seed=1)
    assert torch.equal(head.linear.weight, ValueHead(8, seed=1).linear.weight)
    out = head(torch.ones(2, 3, 8))
    assert out.shape == (2, 3) and math.isfinite(float(out.detach().sum()))
