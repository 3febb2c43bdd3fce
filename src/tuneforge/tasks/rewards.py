"""Rewards for on-policy RL: small pure functions from completions to floats, in a registry.

A reward takes the sampled completions, the examples they answer (same order) and the task whose data they
come from (extraction: its ``fields``), and returns one float per completion. ``rl.reward`` names a
registered reward, a ``module:function`` with the same signature, or a finished ``reward_model`` run
folder (its model scores each prompt and completion).

A ``module:function`` is the user's own code. Importing it runs it, so it is imported only when a reward is
needed (training, or scoring a run) *and* the user allowed it: ``--allow-code`` on the command line (which sets
``TUNEFORGE_ALLOW_CODE=1``) or ``allow_code: true`` in the recipe. Opening a run folder to predict, serve or
describe it never imports anything its recipe names.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, UserError
from tuneforge.evaluate.metrics import normalise_record, parse_json_object
from tuneforge.registry import Registry
from tuneforge.tasks.base import Example, JudgeFn, Task

RewardFn = Callable[[list[str], list[Example], Task], list[float]]
REWARDS: Registry[RewardFn] = Registry("reward")

#: set to "1" by the CLI's ``--allow-code``: user code named in a recipe may be imported in this process
ALLOW_CODE_ENV = "TUNEFORGE_ALLOW_CODE"
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def code_allowed(recipe_allows: bool) -> bool:
    """Whether code named in a recipe may run: the recipe's ``allow_code`` or ``--allow-code``."""
    return recipe_allows or os.environ.get(ALLOW_CODE_ENV) == "1"


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


def reward_model_reward(judge: JudgeFn) -> RewardFn:
    """A trained reward model (opened as a judge) as the reward: it scores each (prompt, completion)."""

    def score(completions: list[str], examples: list[Example], task: Task) -> list[float]:
        return judge([task.prompt_messages(e) for e in examples], completions)

    return score


def resolve_reward(spec: str, *, allow_code: bool, task: Task | None = None) -> RewardFn:
    """``rl.reward`` as a function: a registered name, ``module:function``, or a reward-model run folder.

    Call it only when a reward is about to be computed: a ``module:function`` is imported here, and only
    with ``allow_code``; without it the user hears how to allow it. A run folder is opened as a judge by
    ``task`` (``Task.judge``), the task that asks for the reward.
    """
    if spec in REWARDS:
        return REWARDS.get(spec)
    if Path(spec).is_dir():
        if task is None:
            raise ConfigError(f"rl.reward {spec!r} is a run folder: only a task can open it as a judge")
        return reward_model_reward(task.judge(Path(spec)))
    if ":" in spec:
        return _import_reward(spec, allow_code)
    raise ConfigError(f"rl.reward {spec!r} is not a registered reward ({', '.join(REWARDS.names())}), "
                      "a module:function, or a reward_model run folder")


def _import_reward(spec: str, allow_code: bool) -> RewardFn:
    module, _, name = spec.partition(":")
    if not _DOTTED.match(module) or not name.isidentifier():
        raise ConfigError(f"rl.reward {spec!r} must look like package.module:function")
    if not allow_code:
        raise UserError(
            f"rl.reward {spec!r} names Python code, and tuneforge runs code named in a recipe only when you allow "
            f"it: if you trust {module!r}, pass --allow-code to this command (or set `allow_code: true` at the "
            "top of the recipe)"
        )
    try:
        fn: Any = getattr(importlib.import_module(module), name)
    except Exception as err:  # the user's module: any failure on import is theirs to fix
        raise ConfigError(f"rl.reward {spec!r}: cannot import it ({type(err).__name__}: {err})") from None
    if not callable(fn):
        raise ConfigError(f"rl.reward {spec!r} is not a function")
    return fn
