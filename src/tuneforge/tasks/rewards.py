"""Rewards for on-policy RL: small pure functions from completions to floats, in a registry.

A reward takes the sampled completions, the examples they answer (same order) and the task whose data they
come from (extraction: its ``fields``), and returns one float per completion. ``rl.reward`` names a
registered reward, a ``module:function`` with the same signature, or a finished ``reward_model`` run
folder (its model scores each prompt and completion).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError
from tuneforge.evaluate.metrics import normalise_record, parse_json_object
from tuneforge.registry import Registry
from tuneforge.tasks.base import Example, Task

RewardFn = Callable[[list[str], list[Example], Task], list[float]]
REWARDS: Registry[RewardFn] = Registry("reward")


def _fields(task: Task) -> list[str]:
    fields = task.schema.get("fields")
    if not fields:
        raise ConfigError(f"this reward needs an extraction task's fields; rl.task is {task.name}")
    return list(fields)


@REWARDS.register("json_valid")
def json_valid(completions: list[str], examples: list[Example], task: Task) -> list[float]:
    """1.0 when the completion holds a JSON object, else 0.0.

    >>> json_valid(['{"a": 1}', 'no'], [], None)  # type: ignore[arg-type]
    [1.0, 0.0]
    """
    return [float(parse_json_object(c) is not None) for c in completions]


@REWARDS.register("json_fields")
def json_fields(completions: list[str], examples: list[Example], task: Task) -> list[float]:
    """1.0 when the completion is a JSON object holding every required field (the extraction schema's
    fields) and no other key, else 0.0: "valid JSON with the required fields"."""
    fields = set(_fields(task))
    return [float(obj is not None and set(obj) == fields) for obj in map(parse_json_object, completions)]


@REWARDS.register("field_accuracy")
def field_accuracy(completions: list[str], examples: list[Example], task: Task) -> list[float]:
    """Share of the schema's fields whose value matches the reference (0.0 for a completion without JSON)."""
    fields = _fields(task)
    out = []
    for c, e in zip(completions, examples):
        obj = parse_json_object(c)
        if obj is None:
            out.append(0.0)
            continue
        got = normalise_record({k: obj.get(k) for k in fields})
        want = normalise_record({k: e.target.get(k) for k in fields})
        out.append(sum(got.get(k) == want.get(k) for k in fields) / len(fields))
    return out


def reward_model_reward(run_dir: Path) -> RewardFn:
    """A trained reward model as the reward: it scores each (prompt, completion)."""
    from tuneforge.preference.judge import Judge

    judge = Judge(run_dir)

    def score(completions: list[str], examples: list[Example], task: Task) -> list[float]:
        return judge.score([task.prompt_messages(e) for e in examples], completions)

    return score


def resolve_reward(spec: str) -> RewardFn:
    """``rl.reward`` as a function: a registered name, ``module:function``, or a reward-model run folder."""
    if spec in REWARDS:
        return REWARDS.get(spec)
    if Path(spec).is_dir():
        return reward_model_reward(Path(spec))
    if ":" in spec:
        module, _, name = spec.partition(":")
        try:
            fn: Any = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"rl.reward {spec!r}: cannot import it ({err})") from None
        if not callable(fn):
            raise ConfigError(f"rl.reward {spec!r} is not a function")
        return fn
    raise ConfigError(f"rl.reward {spec!r} is not a registered reward ({', '.join(REWARDS.names())}), "
                      "a module:function, or a reward_model run folder")
