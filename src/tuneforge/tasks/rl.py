"""On-policy reinforcement learning from a reward: GRPO, RLOO or PPO, inside the one training loop.

``rl.algorithm`` picks the policy update (``ALGORITHMS``). GRPO and RLOO: each call of ``loss`` is one
on-policy step for a batch of prompts: sample ``rl.group_size`` completions per prompt from the current
policy (no gradient), score them with the reward, turn the rewards into advantages against the group's own
baseline, and return the policy-gradient loss plus ``rl.beta`` times the KL to the reference (the same
network with its adapter off). No value model and no second copy of the policy: the group is the baseline
(GRPO, Shao et al. 2024, https://arxiv.org/abs/2402.03300; RLOO, Ahmadian et al. 2024,
https://arxiv.org/abs/2402.14740). One gradient step per sample batch, so the importance ratio is 1 and
clipping has nothing to do; the loss is ``-A * log pi`` per token.

PPO (Schulman et al. 2017, https://arxiv.org/abs/1707.06347; see ``tuneforge.preference.ppo``): the same
samples, then a value head, GAE advantages on per-token rewards that carry the KL penalty to the adapter-off
reference, and ``rl.ppo_epochs`` passes of ``rl.ppo_minibatches`` clipped-surrogate steps per rollout, each
one optimizer step of the loop.

Data, prompts, prediction and scoring come from ``rl.task`` (extraction or generation), so the report
compares base and tuned models on that task's metrics, plus the mean ``reward`` of their greedy answers.
The loop logs reward, KL and response length per step through ``Task.step_metrics``.

The reward is resolved on first use, never when a run is opened: ``rl.reward`` may name the user's own
code (see :mod:`tuneforge.tasks.rewards`), which runs only for training (``fit_schema`` asks for it, so a
refusal comes before any model loads) and scoring; ``predict`` alone never computes a reward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from typing import Any

import torch
from transformers import PreTrainedModel

from tuneforge.data.readers import Record
from tuneforge.infer import Sampling, generate_ids
from tuneforge.tasks.answers import Group, adapter_off, check_reference, collate_groups, group_token_logps
from tuneforge.preference.meter import Meter
from tuneforge.tasks.decoding import generate_with_transformers, prompt_learning, stop_token_ids
from tuneforge.preference.ppo import PPOLearner, PPOSettings, answer_logps_values
from tuneforge.tasks.rewards import RewardFn, code_allowed, resolve_reward
from tuneforge.recipe import RLConfig, TaskSection
from tuneforge.registry import Registry
from tuneforge.tasks.base import (IGNORE, TASKS, Encoded, Example, Task, TaskSettings, collate_causal, pad_id,
                                  prompt_text, without_ddp)


# ----------------------------------------------------------------------------- advantages
def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al. 2024, eq. 3, outcome supervision): ``(r - mean_group) / (std_group + eps)``.

    ``rewards``: ``(B, G)``; a group whose completions all score the same gets zero advantage.

    >>> grpo_advantages(torch.tensor([[1.0, 0.0]])).round(decimals=3)
    tensor([[ 0.707, -0.707]])
    """
    mean = rewards.mean(-1, keepdim=True)  # (B, 1)
    std = rewards.std(-1, keepdim=True)  # (B, 1)
    return (rewards - mean) / (std + eps)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024, eq. 7): each completion's baseline is the mean of the other G - 1.

    >>> rloo_advantages(torch.tensor([[1.0, 0.0, 0.0]]))
    tensor([[ 1.0000, -0.5000, -0.5000]])
    """
    g = rewards.shape[-1]
    others = (rewards.sum(-1, keepdim=True) - rewards) / (g - 1)  # (B, G)
    return rewards - others


ADVANTAGES: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("advantage estimator")
ADVANTAGES.register("grpo")(grpo_advantages)
ADVANTAGES.register("rloo")(rloo_advantages)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate on sampled tokens, ``exp(d) - d - 1`` with ``d = ref - logp``
    (Schulman 2020, "Approximating KL divergence"; as in GRPO): unbiased, never negative."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def policy_gradient_loss(logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, rows: torch.Tensor,
                         n_rows: int, beta: float) -> torch.Tensor:
    """Per-sequence loss ``(S,)``: the token mean of ``-A * logp + beta * KL``.

    ``logp``, ``ref_logp``: ``(N,)`` sampled-token log-probabilities; ``rows``: ``(N,)`` their sequence;
    ``advantages``: ``(S,)``. The gradient of ``-A logp`` raises completions with A > 0 and lowers the rest.
    """
    per_token = -advantages[rows] * logp + beta * k3_kl(logp, ref_logp)  # (N,)
    sums = torch.zeros(n_rows, dtype=per_token.dtype, device=per_token.device).index_add(0, rows, per_token)
    counts = torch.bincount(rows, minlength=n_rows).clamp(min=1)
    return sums / counts


# ----------------------------------------------------------------------------- policy updates
class PolicyUpdate(ABC):
    """How one training step turns sampled completions into a loss: what ``rl.algorithm`` names."""

    @abstractmethod
    def loss(self, task: ReinforcementLearning, model: PreTrainedModel,
             batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]: ...


class GroupBaseline(PolicyUpdate):
    """GRPO / RLOO: one gradient step per sample batch, the group as the baseline, ``-A log pi + beta KL``."""

    def __init__(self, cfg: RLConfig, advantages: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.cfg, self.advantages = cfg, advantages

    def loss(self, task: ReinforcementLearning, model: PreTrainedModel,
             batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        b, g = batch["input_ids"].shape[0], self.cfg.group_size
        completions, rewards = task.rollout(model, batch)
        advantages = self.advantages(rewards.view(b, g)).view(-1)  # (B * G,)
        groups = task.groups(batch, completions)  # a prompt's G answers
        collated = collate_groups(groups, pad_id(task.tokenizer))
        grouped = {k: v.to(batch["input_ids"].device) for k, v in collated.items()}
        logp, rows, _ = group_token_logps(model, grouped)  # (N,), (N,): each prompt runs once for its G answers
        ref_logp = logp.detach()
        if self.cfg.beta > 0:
            with adapter_off(model):
                ref_logp, _, _ = group_token_logps(model, grouped)
        per_seq = policy_gradient_loss(logp, ref_logp, advantages.to(logp.device), rows, b * g, self.cfg.beta)  # (S,)
        kl = torch.zeros(b * g, device=logp.device).index_add(0, rows, k3_kl(logp.detach(), ref_logp))  # (S,)
        task.record(rewards, kl, completions)
        return per_seq.view(b, g).mean(1).sum(), b


class ProximalPolicy(PolicyUpdate):
    """PPO (``tuneforge.preference.ppo``): a rollout serves ``rl.ppo_epochs x rl.ppo_minibatches`` clipped steps,
    with a value head, GAE, and the KL to the adapter-off reference in the per-token reward."""

    def __init__(self, cfg: RLConfig, seed: int) -> None:
        self.cfg = cfg
        self.learner = PPOLearner(PPOSettings(beta=cfg.beta, epochs=cfg.ppo_epochs, minibatches=cfg.ppo_minibatches,
                                              clip=cfg.ppo_clip, value_clip=cfg.ppo_clip, gamma=cfg.gamma,
                                              lam=cfg.lam, value_lr=cfg.value_lr, seed=seed))

    def loss(self, task: ReinforcementLearning, model: PreTrainedModel,
             batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        if self.learner.needs_rollout:
            completions, rewards = task.rollout(model, batch)
            groups = task.groups(batch, completions)
            causal = {k: v.to(batch["input_ids"].device)
                      for k, v in collate_causal([s for grp in groups for s in grp.sequences],
                                                 pad_id(task.tokenizer)).items()}
            reference = None
            if self.cfg.beta > 0:
                with adapter_off(model):
                    reference, _, _ = answer_logps_values(model, None, causal)
            r = self.learner.collect(model, causal, rewards, reference)
            ref = r.logp_old if reference is None else reference
            task.record(rewards, ((r.logp_old - ref) * r.mask).sum(-1), completions)
        policy, n, stats = self.learner.step(model)
        for name, value in stats.items():
            task.meter.add(name, value, n)
        return policy, n


#: what ``rl.algorithm`` names: a policy update built from the RL section and the run's seed
ALGORITHMS: Registry[Callable[[RLConfig, int], PolicyUpdate]] = Registry("rl algorithm")


@ALGORITHMS.register("grpo")
def grpo(cfg: RLConfig, seed: int) -> PolicyUpdate:
    return GroupBaseline(cfg, grpo_advantages)


@ALGORITHMS.register("rloo")
def rloo(cfg: RLConfig, seed: int) -> PolicyUpdate:
    return GroupBaseline(cfg, rloo_advantages)


ALGORITHMS.register("ppo")(ProximalPolicy)


# ----------------------------------------------------------------------------- the task
@TASKS.register("rl", config=TaskSection("rl", RLConfig))
class ReinforcementLearning(Task):
    name = "rl"
    cacheable = False  # encoding records each prompt's example for the reward: it must run every time

    def __init__(self, settings: TaskSettings, tokenizer: Any, model_kind: str) -> None:
        self.cfg = settings.own or RLConfig()
        self.inner = TASKS.get(self.cfg.task)(replace(settings, own=None), tokenizer, model_kind)
        super().__init__(settings, tokenizer, model_kind)
        if self.cfg.beta > 0:
            check_reference(settings.method, "rl.beta > 0 (the KL penalty)")
        self.headline = ("reward", *self.inner.headline)  # type: ignore[misc]
        self.per_item_metrics = ("reward", *self.inner.per_item_metrics)  # type: ignore[misc]
        self.validation_metrics = ("reward", *self.inner.validation_metrics)  # type: ignore[misc]
        self.lower_is_better = self.inner.lower_is_better  # type: ignore[misc]
        self.meter = Meter()
        self._prompts: list[Example] = []

    def configure(self, settings: TaskSettings) -> None:
        """New settings for this task and the task whose answers it rewards."""
        super().configure(settings)
        self.inner.configure(replace(settings, own=None))

    @cached_property
    def reward_fn(self) -> RewardFn:
        """The reward, imported (user code only with ``allow_code``) the first time training or scoring needs it."""
        return resolve_reward(self.cfg.reward, allow_code=code_allowed(self.settings.allow_code), task=self)

    @property
    def schema(self) -> dict[str, Any]:
        return self.inner.schema

    @schema.setter
    def schema(self, value: dict[str, Any]) -> None:
        self.inner.schema = value

    # -- data: the inner task's ---------------------------------------------------------
    def parse(self, records: list[Record], what: str) -> list[Example]:
        return self.inner.parse(records, what)

    def fit_schema(self, train: list[Example]) -> None:
        """The inner task's schema; and the reward now, so that training fails before any model loads."""
        self.inner.fit_schema(train)
        _ = self.reward_fn

    def check_against_schema(self, examples: list[Example], what: str) -> None:
        self.inner.check_against_schema(examples, what)

    def prompt_messages(self, example: Example) -> list[dict[str, str]]:
        return self.inner.prompt_messages(example)

    @property
    def data_name(self) -> str:
        return self.inner.name

    def parse_for_prediction(self, records: list[Record], what: str) -> list[Example]:
        return self.inner.parse_for_prediction(records, what)

    def input_fields(self, text: str) -> dict[str, Any]:
        return self.inner.input_fields(text)

    def chat_fields(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return self.inner.chat_fields(messages)

    @classmethod
    def answers_task(cls, recipe: dict[str, Any]) -> type[Task]:
        return TASKS.get((recipe.get("rl") or {}).get("task", RLConfig.model_fields["task"].default))

    def encode(self, example: Example) -> Encoded:
        """The prompt's token ids; ``labels`` is the example's index, so ``loss`` can find its reference."""
        self._prompts.append(example)
        ids = self.tokenizer(prompt_text(self.tokenizer, self.prompt_messages(example)),
                             add_special_tokens=False)["input_ids"]
        budget = self.settings.max_length - self.cfg.max_new_tokens
        return Encoded(input_ids=ids[-budget:], labels=len(self._prompts) - 1, truncated=len(ids) > budget)

    def collate(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        """Left-padded prompts (generation continues them); ``labels`` ``(B,)`` counts prompts for the loop."""
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), pad_id(self.tokenizer), dtype=torch.long)  # (B, P)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(batch):
            ids[i, width - len(e.input_ids):] = torch.tensor(e.input_ids)
            mask[i, width - len(e.input_ids):] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.ones(len(batch)),
                "index": torch.tensor([int(e.labels) for e in batch])}  # type: ignore[arg-type]

    # -- one on-policy step ---------------------------------------------------------------
    @torch.no_grad()
    def _sample(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> list[list[int]]:
        """``group_size`` sampled completions per prompt, each ending with its stop token when it has one.

        Sampled on the fast decode loop (``tuneforge.infer``): rows leave as they stop. Each completion's
        random stream is seeded from torch's global generator, so a seeded run samples the same rollouts.
        """
        g = self.cfg.group_size
        prompts = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"])
                   for _ in range(g)]
        seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()
        rules = [Sampling(max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature, seed=s)
                 for s in seeds]
        if prompt_learning(model):  # a soft prompt or prefix brings its own cache: transformers decodes it
            done = generate_with_transformers(without_ddp(model), self.tokenizer, prompts,
                                              Sampling(self.cfg.max_new_tokens, self.cfg.temperature), len(prompts),
                                              "rollouts")
        else:
            done = generate_ids(without_ddp(model), self.tokenizer, prompts, rules, batch_size=len(prompts),
                                stop_ids=stop_token_ids(self.tokenizer), pad=pad_id(self.tokenizer))
        return [d.tokens + ([d.stop_token] if d.stop_token is not None else []) for d in done]

    def loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *,
             training: bool = False) -> tuple[torch.Tensor, int]:
        """Summed per-prompt loss and the number of prompts (``rl.algorithm`` decides how); outside training,
        minus the mean sampled reward."""
        if training:
            return self.update.loss(self, model, batch)
        b, g = batch["input_ids"].shape[0], self.cfg.group_size
        _, rewards = self.rollout(model, batch)
        return -rewards.view(b, g).mean(1).sum().to(batch["input_ids"].device), b

    @cached_property
    def update(self) -> PolicyUpdate:
        return ALGORITHMS.get(self.cfg.algorithm)(self.cfg, self.settings.seed)

    def rollout(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[list[list[int]], torch.Tensor]:
        """``group_size`` sampled completions per prompt and their rewards ``(B * G,)``."""
        g = self.cfg.group_size
        completions = self._sample(model, batch)
        examples = [self._prompts[int(i)] for i in batch["index"] for _ in range(g)]
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return completions, torch.tensor(self.reward_fn(texts, examples, self.inner), dtype=torch.float32)

    def groups(self, batch: dict[str, torch.Tensor], completions: list[list[int]]) -> list[Group]:
        """Each prompt with its G sampled answers, as answer groups (loss on the answer tokens only)."""
        g = self.cfg.group_size
        prompts = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"])]
        return [Group.of([Encoded(input_ids=prompts[i] + c, labels=[IGNORE] * len(prompts[i]) + c)
                          for c in completions[i * g : (i + 1) * g]]) for i in range(len(prompts))]

    def record(self, rewards: torch.Tensor, kl: torch.Tensor, completions: list[list[int]]) -> None:
        """Log a sample batch: its mean reward and spread within groups, KL per sequence ``(S,)``, answer length."""
        n = len(completions)
        self.meter.add("reward", float(rewards.mean()), n)
        self.meter.add("reward_std", float(rewards.view(-1, self.cfg.group_size).std(-1).mean()), n)
        self.meter.add("kl", float(kl.mean()), n)
        self.meter.add("response_length", sum(map(len, completions)) / n, n)

    def step_metrics(self) -> dict[str, float]:
        return self.meter.pop()

    # -- evaluation: the inner task's, plus the reward of greedy answers ------------------
    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        """The inner task's predictions; no reward (scoring adds it), so predicting runs no recipe code."""
        return self.inner.predict(model, examples)

    def _rewards(self, examples: list[Example], predictions: list[dict[str, Any]]) -> list[float]:
        """Each prediction's reward, computed once and kept in the prediction (the report saves it)."""
        if any("reward" not in p for p in predictions):
            texts = [str(p.get("raw", p["prediction"])) for p in predictions]
            for p, r in zip(predictions, self.reward_fn(texts, examples, self.inner)):
                p["reward"] = float(r)
        return [float(p["reward"]) for p in predictions]

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"reward": sum(self._rewards(examples, predictions)) / max(len(predictions), 1),
                **self.inner.score(examples, predictions)}

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        return {"reward": self._rewards(examples, predictions), **self.inner.item_scores(examples, predictions)}
