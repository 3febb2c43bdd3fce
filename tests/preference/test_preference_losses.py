"""Each preference loss equals a value computed by hand on a fixed batch."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.preference.losses import (
    LOSSES, SequenceScores, bradley_terry_loss, dpo_loss, ipo_loss, kto_loss, log_odds, orpo_loss,
    plackett_luce_loss, simpo_loss,
)
from tuneforge.recipe import PreferenceConfig

# a fixed batch of two pairs: summed log-probabilities of chosen / rejected, policy and reference
PC, PR = torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -5.0])
RC, RR = torch.tensor([-4.5, -6.0]), torch.tensor([-4.5, -5.5])


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dpo_matches_hand_computation() -> None:
    # pair 1: h = 0.5 * ((-4 + 4.5) - (-5 + 4.5)) = 0.5 ; pair 2: h = 0.5 * ((0) - (0.5)) = -0.25
    got = dpo_loss(PC, PR, RC, RR, beta=0.5)
    want = [-math.log(sig(0.5)), -math.log(sig(-0.25))]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    smoothed = dpo_loss(PC, PR, RC, RR, beta=0.5, label_smoothing=0.1)
    assert float(smoothed[0]) == pytest.approx(-0.9 * math.log(sig(0.5)) - 0.1 * math.log(sig(-0.5)), abs=1e-6)


def test_ipo_matches_hand_computation() -> None:
    # h = (1.0, -0.5); target 1 / (2 * 0.25) = 2
    assert ipo_loss(PC, PR, RC, RR, tau=0.25).tolist() == pytest.approx([1.0, 6.25])


def test_simpo_matches_hand_computation() -> None:
    # mean logps: chosen -4/4 = -1, rejected -5/2 = -2.5 ; beta 2, gamma 1: -log sig(2 * 1.5 - 1)
    assert float(simpo_loss(torch.tensor([-1.0]), torch.tensor([-2.5]), 2.0, 1.0)) == pytest.approx(-math.log(sig(2.0)))


def test_orpo_matches_hand_computation() -> None:
    c, r = math.log(0.5), math.log(0.25)  # per-token mean probabilities 0.5 and 0.25: odds 1 and 1/3
    want = -c - 0.1 * math.log(sig(math.log(1.0) - math.log(1 / 3)))
    assert float(orpo_loss(torch.tensor([c]), torch.tensor([r]), 0.1)) == pytest.approx(want, abs=1e-5)
    assert float(log_odds(torch.tensor([math.log(0.8)]))) == pytest.approx(math.log(4.0), abs=1e-5)


def test_kto_matches_hand_computation() -> None:
    logp, ref = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0])  # r = (1, -1): batch mean 0 -> z = 0
    got = kto_loss(logp, ref, torch.tensor([True, False]), beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    assert got.tolist() == pytest.approx([1 - sig(0.5), 2 * (1 - sig(0.5))], abs=1e-6)
    with_kl = kto_loss(logp, ref, torch.tensor([True, False]), beta=1.0, kl=torch.tensor(0.5))
    assert with_kl.tolist() == pytest.approx([1 - sig(0.5), 1 - sig(1.5)], abs=1e-6)


def test_bradley_terry_and_plackett_luce() -> None:
    assert float(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]))) == pytest.approx(-math.log(sig(1.0)))
    r = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.5, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    want0 = -(3 - math.log(math.exp(3) + math.exp(1) + 1) + 1 - math.log(math.exp(1) + 1))
    want1 = -math.log(sig(1.5))  # a ranking of 2 is a Bradley-Terry pair
    assert plackett_luce_loss(r, mask).tolist() == pytest.approx([want0, want1], abs=1e-5)


def test_registry_wires_every_loss_and_its_implicit_reward() -> None:
    assert LOSSES.names() == ["dpo", "ipo", "kto", "orpo", "simpo"]
    cfg = PreferenceConfig(beta=0.5)
    policy = SequenceScores(torch.cat([PC, PR]), torch.tensor([4.0, 4.0, 2.0, 2.0]))
    ref = SequenceScores(torch.cat([RC, RR]), policy.tokens)
    desirable = torch.tensor([True, True])
    assert LOSSES.get("dpo").loss(policy, ref, desirable, cfg).tolist() == pytest.approx(
        dpo_loss(PC, PR, RC, RR, 0.5).tolist())
    assert LOSSES.get("dpo").reward(policy, ref, cfg).tolist() == pytest.approx([0.25, 0.0, -0.25, 0.25])
    for name in LOSSES.names():
        spec = LOSSES.get(name)
        out = spec.loss(policy, ref if spec.needs_reference else None,
                        torch.tensor([True, False, True, False]) if not spec.pairwise else desirable, cfg)
        assert torch.isfinite(out).all() and out.shape == ((2,) if spec.pairwise else (4,))
