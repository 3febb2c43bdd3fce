"""The run layer hands tasks what only it can open (judge runs, teacher runs), and one run pipeline is one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge.errors import ConfigError
from tuneforge.models.loading import load_tokenizer
from tuneforge.recipe import recipe_from_dict
from tuneforge.run import loading, pipeline
from tuneforge.tasks.base import get_task
from tuneforge.tasks.rewards import resolve_reward


def _recipe(tmp_path: Path, model: Path) -> dict:
    return base_recipe(model, "classification", write_jsonl(tmp_path / "d.jsonl", sentiment_rows(20)), tmp_path / "run")


def test_a_task_built_by_the_run_layer_can_open_a_judge_and_a_bare_one_says_how(tmp_path: Path,
                                                                               tiny_encoder: Path) -> None:
    recipe = recipe_from_dict(_recipe(tmp_path, tiny_encoder))
    tokenizer = load_tokenizer(tiny_encoder)
    assert loading.build_task(recipe, tokenizer, "encoder").open_judge is loading.open_judge
    bare = get_task(recipe, tokenizer, "encoder")
    with pytest.raises(ConfigError, match="build_task"):
        bare.judge(tmp_path)


def test_a_reward_run_folder_needs_the_task_that_opens_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only a task can open it"):
        resolve_reward(str(tmp_path), allow_code=False)


def test_the_one_run_pipeline_leaves_runs_made_of_runs_to_the_composed_entry(tmp_path: Path,
                                                                             tiny_encoder: Path) -> None:
    raw = _recipe(tmp_path, tiny_encoder)
    stage = {k: raw[k] for k in ("task", "data", "method")}
    chained = {"model": raw["model"], "train": raw["train"], "output": str(tmp_path / "chain"),
               "stages": [{"name": "one", **stage}, {"name": "two", **stage}]}
    with pytest.raises(ConfigError, match="tuneforge.api.train"):
        pipeline.train(chained, dry_run=True, echo=lambda *_: None)
