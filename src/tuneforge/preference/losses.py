"""Preference losses as small pure functions on sequence log-probabilities, plus their registry.

Every function takes per-example tensors of shape ``(B,)`` and returns per-example losses ``(B,)``; the
task sums them and the loop divides by the number of examples in the step. Log-probabilities are sums over
the answer tokens (``logp``) unless the name says ``mean``. ``ref`` is the reference model: the same
network with its adapter switched off (:func:`tuneforge.tasks.answers.reference_logps`).

Written here rather than taken from trl's ``DPOTrainer`` because trl ships its losses inside a trainer
(its own loop, its own data collator and reference-model handling); the maths is a few lines each, and a
pure function is testable against hand-computed values (see ``tests/test_preference_losses.py``).
The shapes follow torchtune's ``rlhf/loss/dpo.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tuneforge.recipe import PreferenceConfig
from tuneforge.registry import Registry


# ----------------------------------------------------------------------------- the maths
def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290), eq. 7.

    ``h = beta * ((logp_c - ref_c) - (logp_r - ref_r))``; loss ``= -log sigmoid(h)``. With
    ``label_smoothing`` eps (conservative DPO, Mitchell 2023): ``-(1-eps) log sigmoid(h) - eps log sigmoid(-h)``.

    >>> t = torch.tensor
    >>> round(float(dpo_loss(t([-1.]), t([-2.]), t([-1.5]), t([-1.5]), 1.0)), 4)
    0.3133
    """
    h = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))  # (B,)
    return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)


def ipo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             tau: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, https://arxiv.org/abs/2310.12036), eq. 17: ``(h - 1 / (2 tau))^2``.

    ``h = (logp_c - ref_c) - (logp_r - ref_r)``: a squared loss regresses the log-ratio gap to a finite
    target instead of pushing it to infinity as DPO's logistic loss does on deterministic preferences.
    """
    h = (chosen - ref_chosen) - (rejected - ref_rejected)  # (B,)
    return (h - 1.0 / (2.0 * tau)) ** 2


def simpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734), eq. 6: no reference model.

    The reward is the length-normalised log-probability ``beta * mean logp``, with a target margin gamma:
    ``-log sigmoid(beta * (mean_c - mean_r) - gamma)``.
    """
    return -F.logsigmoid(beta * (chosen_mean - rejected_mean) - gamma)


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` of the per-token geometric-mean probability ``p = exp(mean_logp)``."""
    return mean_logp - torch.log1p(-torch.exp(mean_logp).clamp(max=1 - 1e-6))


def orpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, lam: float) -> torch.Tensor:
    """ORPO (Hong et al. 2024, https://arxiv.org/abs/2403.07691), eq. 6-7: SFT plus an odds ratio, no reference.

    ``-mean_c  +  lam * -log sigmoid(log odds_c - log odds_r)``: the chosen answer's token NLL, plus a push
    of the chosen answer's odds above the rejected one's.
    """
    return -chosen_mean - lam * F.logsigmoid(log_odds(chosen_mean) - log_odds(rejected_mean))


def kto_loss(logp: torch.Tensor, ref: torch.Tensor, desirable: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             kl: torch.Tensor | None = None) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306), eq. 8: binary feedback, no pairs.

    ``r = logp - ref``; a desirable answer costs ``w_D (1 - sigmoid(beta (r - z)))``, an undesirable one
    ``w_U (1 - sigmoid(beta (z - r)))``. ``z`` is the reference point, the policy's KL to the reference;
    the paper estimates it on mismatched prompt/answer pairs, we use the batch mean of ``r`` (detached,
    floored at 0) when ``kl`` is not given: one forward pass fewer, the same role (a baseline).
    """
    r = logp - ref  # (B,)
    z = (r.detach().mean() if kl is None else kl).clamp(min=0)
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - r)))
    return torch.where(desirable, good, bad)


def bradley_terry_loss(chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> torch.Tensor:
    """Pairwise reward-model loss (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1): ``-log sigmoid(r_c - r_r)``.

    >>> round(float(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]))), 4)
    0.3133
    """
    return -F.logsigmoid(chosen_reward - rejected_reward)


def plackett_luce_loss(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Listwise reward-model loss (Plackett 1975; Luce 1959): minus the log-likelihood of the ranking.

    ``rewards``: ``(B, K)`` best first; ``mask``: ``(B, K)`` true where a response exists (rankings of
    different lengths are right-padded). ``-sum_i [r_i - logsumexp(r_i .. r_K)]`` over the real
    positions; for K = 2 it equals the Bradley-Terry loss.
    """
    masked = rewards.masked_fill(~mask, float("-inf"))  # (B, K)
    # logsumexp over the suffix i..K: flip, cumulative logsumexp, flip back
    suffix = torch.logcumsumexp(masked.flip(-1), dim=-1).flip(-1)  # (B, K)
    terms = torch.where(mask, rewards - suffix, torch.zeros_like(rewards))  # the last real term is 0
    return -terms.sum(-1)


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class SequenceScores:
    """Summed answer log-probabilities and answer lengths of a batch of (chosen, rejected) or single answers."""

    logp: torch.Tensor  # (S,)
    tokens: torch.Tensor  # (S,)

    @property
    def mean(self) -> torch.Tensor:
        return self.logp / self.tokens.clamp(min=1)


@dataclass(frozen=True)
class PreferenceLoss:
    """A registered loss: how it is computed, and the implicit reward it ranks answers by (for evaluation).

    ``pairwise``: the batch is (chosen, rejected) halves; otherwise single answers with a desirable flag.
    """

    loss: Callable[[SequenceScores, SequenceScores | None, torch.Tensor, PreferenceConfig], torch.Tensor]
    reward: Callable[[SequenceScores, SequenceScores | None, PreferenceConfig], torch.Tensor]
    needs_reference: bool
    pairwise: bool = True


LOSSES: Registry[PreferenceLoss] = Registry("preference loss")


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = x.shape[0] // 2
    return x[:b], x[b:]


def _ratio_reward(policy: SequenceScores, ref: SequenceScores | None, cfg: PreferenceConfig) -> torch.Tensor:
    assert ref is not None
    return cfg.beta * (policy.logp - ref.logp)


def _dpo(policy: SequenceScores, ref: SequenceScores | None, desirable: torch.Tensor,
         cfg: PreferenceConfig) -> torch.Tensor:
    assert ref is not None
    return dpo_loss(*_halves(policy.logp), *_halves(ref.logp), cfg.beta, cfg.label_smoothing)


def _ipo(policy: SequenceScores, ref: SequenceScores | None, desirable: torch.Tensor,
         cfg: PreferenceConfig) -> torch.Tensor:
    assert ref is not None
    return ipo_loss(*_halves(policy.logp), *_halves(ref.logp), cfg.beta)


def _simpo(policy: SequenceScores, ref: SequenceScores | None, desirable: torch.Tensor,
           cfg: PreferenceConfig) -> torch.Tensor:
    return simpo_loss(*_halves(policy.mean), cfg.beta, cfg.simpo_gamma)


def _orpo(policy: SequenceScores, ref: SequenceScores | None, desirable: torch.Tensor,
          cfg: PreferenceConfig) -> torch.Tensor:
    return orpo_loss(*_halves(policy.mean), cfg.beta)


def _kto(policy: SequenceScores, ref: SequenceScores | None, desirable: torch.Tensor,
         cfg: PreferenceConfig) -> torch.Tensor:
    assert ref is not None
    return kto_loss(policy.logp, ref.logp, desirable, cfg.beta, cfg.kto_desirable_weight, cfg.kto_undesirable_weight)


def _mean_reward(policy: SequenceScores, ref: SequenceScores | None, cfg: PreferenceConfig) -> torch.Tensor:
    return cfg.beta * policy.mean


def _odds_reward(policy: SequenceScores, ref: SequenceScores | None, cfg: PreferenceConfig) -> torch.Tensor:
    return log_odds(policy.mean)


LOSSES.register("dpo")(PreferenceLoss(_dpo, _ratio_reward, needs_reference=True))
LOSSES.register("ipo")(PreferenceLoss(_ipo, _ratio_reward, needs_reference=True))
LOSSES.register("kto")(PreferenceLoss(_kto, _ratio_reward, needs_reference=True, pairwise=False))
LOSSES.register("simpo")(PreferenceLoss(_simpo, _mean_reward, needs_reference=False))
LOSSES.register("orpo")(PreferenceLoss(_orpo, _odds_reward, needs_reference=False))
