"""The recipe's names come from the registries: what they hold validates, anything else fails naming its path."""

from __future__ import annotations

from typing import Any

import pytest

from tuneforge.errors import ConfigError
from tuneforge.evaluate.metrics import METRICS, TextMetric
from tuneforge.methods import METHODS
from tuneforge.preference.losses import LOSSES
from tuneforge.recipe import MethodSection, json_schema, recipe_from_dict
from tuneforge.registry import Registry
from tuneforge.tasks import TASKS
from tuneforge.tasks.rl import ALGORITHMS


def recipe(**extra: Any) -> dict[str, Any]:
    return {"task": "generation", "model": "m", "data": {"train": "t.jsonl"}, **extra}


def errors(**extra: Any) -> str:
    with pytest.raises(ConfigError) as err:
        recipe_from_dict(recipe(**extra), check_files=False)
    return str(err.value)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_registers_its_own_section(name: str) -> None:
    section = METHODS.config(name)
    assert issubclass(section, MethodSection) and section.__module__ == METHODS.get(name).__module__
    assert recipe_from_dict(recipe(method={"name": name}), check_files=False).method == section()


def test_the_schema_is_one_of_every_registered_method() -> None:
    method = json_schema()["properties"]["method"]
    assert method["discriminator"]["propertyName"] == "name"
    assert set(method["discriminator"]["mapping"]) == set(METHODS.names())
    assert len(method["oneOf"]) == len(METHODS.names())


@pytest.mark.parametrize(("extra", "path", "registry"), [
    ({"task": "generaton"}, "task", TASKS),
    ({"task": "preference", "preference": {"loss": "dpoo"}}, "preference.loss", LOSSES),
    ({"task": "rl", "rl": {"algorithm": "ppoo"}}, "rl.algorithm", ALGORITHMS),
])
def test_an_unknown_name_lists_the_registered_ones(extra: dict[str, Any], path: str, registry: Registry[Any]) -> None:
    message = errors(**extra)
    assert f"  {path}: Input should be " in message
    assert all(f"'{name}'" in message for name in registry.names())


def test_an_unknown_method_lists_the_registered_ones() -> None:
    message = errors(method={"name": "lorra"})
    assert "method: Input tag 'lorra'" in message and all(f"'{n}'" in message for n in METHODS.names())


def test_eval_metrics_are_the_text_metrics_of_the_registry() -> None:
    chosen = recipe_from_dict(recipe(eval={"metrics": ["rouge_1", "chrf", "bertscore"]}), check_files=False)
    assert chosen.eval.metrics == ["rouge_1", "chrf", "bertscore"]
    message = errors(eval={"metrics": ["chrf", "json_valid"]})  # a task's own score, not a selectable metric
    assert "eval.metrics.1: Input should be " in message and "'rouge_1'" in message and "'json_valid'" not in message


def test_every_text_metric_gives_a_number_on_text() -> None:
    refs, preds = ["the red mug", "a blue cup"], ["the red mug", "one blue cup"]
    for name, info in METRICS.configs().items():
        if name == "bertscore" or info.reads != "text":
            continue  # bertscore needs the embedded encoder (tests/evaluate/test_metrics_text.py); probabilities
            # and rankings come from the task (tests/evaluate/test_report_metrics.py)
        out = METRICS.get(name)(refs, preds)
        value = out[info.value] if isinstance(info, TextMetric) and info.value else out
        assert isinstance(value, float), name
