"""PPO in the one loop, on a tiny decoder: the rollout's numbers against one-sequence hand computations, the first
update's ratio of 1, the value head learning, and a learnable reward going up with rl.algorithm: ppo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import product_rows, write_jsonl
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.preference.ppo import PPOLearner, PPOSettings, answer_logps_values, gae, kl_shaped_rewards, whiten
from tuneforge.tasks.base import IGNORE, Encoded, collate_causal


def tiny_batch(tiny_decoder: Path) -> tuple[Any, dict[str, torch.Tensor], list[tuple[list[int], list[int]]]]:
    torch.manual_seed(0)
    model = load_model(resolve_model(str(tiny_decoder)), head="causal_lm")
    pad = load_tokenizer(tiny_decoder).pad_token_id
    pairs = [([5, 6, 7], [8, 9, 10, 11]), ([5, 12], [13]), ([14, 15, 16, 17], [18, 19])]  # (prompt, completion)
    rows = [Encoded(input_ids=p + c, labels=[IGNORE] * len(p) + c) for p, c in pairs]
    return model, collate_causal(rows, pad), pairs


def test_rollout_equals_one_sequence_hand_computation(tiny_decoder: Path) -> None:
    model, batch, pairs = tiny_batch(tiny_decoder)
    learner = PPOLearner(PPOSettings(beta=0.1, epochs=2, minibatches=3, gamma=0.9, lam=0.8))
    rewards = torch.tensor([1.0, -1.0, 0.5])
    reference = answer_logps_values(model, None, batch)[0] - 0.05  # a stand-in reference, 0.05 below the policy
    r = learner.collect(model, batch, rewards, reference)
    assert r.mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert len(learner.queue) == 2 * 3
    model.eval()
    want_adv = []
    for i, (prompt, completion) in enumerate(pairs):  # each sequence alone, unpadded, by the textbook recursion
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        n, p = len(completion), len(prompt)
        logits = out.logits[0, p - 1 : p - 1 + n]
        logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)
        values = learner.head(out.hidden_states[-1][0, p - 1 : p - 1 + n]).detach()
        assert r.logp_old[i, :n].tolist() == pytest.approx(logp.tolist(), abs=1e-5)
        assert r.values_old[i, :n].tolist() == pytest.approx(values.tolist(), abs=1e-5)
        shaped = [-0.1 * 0.05] * n  # -beta * (logp_old - ref)
        shaped[-1] += float(rewards[i])
        adv, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            nxt = float(values[t + 1]) if t + 1 < n else 0.0
            running = shaped[t] + 0.9 * nxt - float(values[t]) + 0.9 * 0.8 * running
            adv[t] = running
        want_adv.append(adv)
        assert (r.returns[i, :n] - r.values_old[i, :n]).tolist() == pytest.approx(adv, abs=1e-5)
    flat = torch.tensor([a for row in want_adv for a in row])
    assert r.advantages[r.mask.bool()].tolist() == pytest.approx(((flat - flat.mean()) / flat.std(unbiased=False))
                                                                 .tolist(), abs=1e-4)


def test_first_update_starts_at_ratio_one_and_the_value_head_learns(tiny_decoder: Path) -> None:
    model, batch, _ = tiny_batch(tiny_decoder)
    model.eval()  # no dropout: the ratio of the first step is exactly 1
    learner = PPOLearner(PPOSettings(beta=0.0, epochs=3, minibatches=1, value_lr=0.05))
    learner.collect(model, batch, torch.tensor([1.0, 0.0, -1.0]), None)
    before = learner.head.linear.weight.clone()
    losses = []
    for _ in range(3):
        policy, n, stats = learner.step(model)
        losses.append(stats["value_loss"])
        if len(losses) == 1:
            assert stats["approx_kl_old"] == pytest.approx(0.0, abs=1e-6) and stats["clip_fraction"] == 0.0
        assert n == 3 and policy.requires_grad
    assert not torch.equal(before, learner.head.linear.weight) and losses[-1] < losses[0]
    assert learner.needs_rollout


def _short(completions: list[str], examples: list[Any], task: Any) -> list[float]:
    return [-len(c) / 20 for c in completions]


@pytest.mark.xfail(strict=False, reason="since RL rollouts moved to the fast decode loop (tuneforge.infer), this "
                   "40-step PPO run on a random tiny model improves the reward for some seeds only: open, see issue 21")
def test_ppo_run_improves_a_learnable_reward(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge import api
    from tuneforge.tasks.rewards import REWARDS

    if "test_short_ppo" not in REWARDS:
        REWARDS.register("test_short_ppo")(_short)
    path = write_jsonl(tmp_path / "x.jsonl", product_rows(24))
    recipe = {"task": "rl", "model": str(tiny_decoder), "method": {"name": "lora", "r": 4, "alpha": 8},
              "data": {"train": str(path), "split": {"validation": 0.0, "test": 0.25}},
              "rl": {"task": "extraction", "reward": "test_short_ppo", "group_size": 4, "beta": 0.05,
                     "max_new_tokens": 12, "algorithm": "ppo", "ppo_epochs": 2, "ppo_minibatches": 2},
              "train": {"max_steps": 40, "lr": 2e-2, "batch_size": 4, "seed": 0, "max_length": 96, "warmup_steps": 0},
              "eval": {"max_new_tokens": 8, "batch_size": 8, "base": False}, "output": str(tmp_path / "ppo")}
    result = api.train(recipe, echo=lambda *a: None)
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "clip_fraction" in r and r.get("event") is None]
    assert len(steps) == 40 and all({"value_loss", "approx_kl_old"} <= set(s) for s in steps)
    rewards = [s["reward"] for s in steps if "reward" in s]  # logged on the steps that drew a rollout
    assert len(rewards) == 10 and sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3, rewards
    assert "reward" in result.report["tuned"]


def test_shaping_and_gae_compose_on_a_padded_batch() -> None:
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    shaped = kl_shaped_rewards(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([1.0, 2.0]), mask, beta=0.1)
    adv, ret = gae(shaped, torch.zeros(2, 2), mask, 1.0, 1.0)
    assert adv.tolist() == [[1.0, 1.0], [2.0, 0.0]] and torch.equal(ret, adv)
    assert whiten(adv, mask)[1, 1] == 0
