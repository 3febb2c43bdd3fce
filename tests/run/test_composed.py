"""Staged chains and multi-task mixtures on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import base_recipe, product_rows, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.run.stages import mix, mixing_weights
from tuneforge.errors import ConfigError
from tuneforge.recipe import load_recipe, recipe_from_dict
from tuneforge.run.folder import RunDir
from tuneforge.tasks.base import Encoded

QUIET = {"echo": lambda *_: None}


def _staged(tiny_decoder: Path, tmp_path: Path) -> dict:
    (tmp_path / "domain.txt").write_text("\n\n".join(f"Acme mugs come in colour {c}" for c in ["red", "blue"] * 30))
    write_jsonl(tmp_path / "products.jsonl", product_rows(24))
    return {"model": str(tiny_decoder), "output": str(tmp_path / "chain"),
            "train": {"max_steps": 3, "lr": 1e-2, "batch_size": 4, "max_length": 48},
            "eval": {"batch_size": 8, "max_new_tokens": 12},
            "stages": [
                {"name": "domain", "task": "language_modeling", "data": {"train": "domain.txt"}},
                {"name": "sft", "task": "extraction", "method": {"name": "lora", "r": 4, "alpha": 8},
                 "data": {"train": "products.jsonl"}, "train": {"max_steps": 2}},
            ]}


def test_stages_chain_weights_and_report_each_stage(tmp_path: Path, tiny_decoder: Path) -> None:
    recipe_path = tmp_path / "chain.yaml"
    recipe_path.write_text(yaml.safe_dump(_staged(tiny_decoder, tmp_path)))
    result = api.train(load_recipe(recipe_path), **QUIET)  # relative data paths resolve from the recipe's folder
    chain = RunDir(result.run_dir)
    assert chain.is_complete()
    stages = json.loads(chain.report_json.read_text())["stages"]
    assert [s["stage"] for s in stages] == ["domain", "sft"]
    assert "perplexity" in stages[0]["headline"] and "field_f1" in stages[1]["headline"]
    second = yaml.safe_load((chain.root / "stages" / "02-sft" / "recipe.yaml").read_text())
    assert second["model"] == str(chain.root / "stages" / "01-domain" / "export")  # starts from stage 1's weights
    assert second["method"] == {"name": "lora", "r": 4, "alpha": 8.0, "dropout": 0.05, "target_modules": "all-linear",
                                "use_dora": False, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {},
                                "quantize": None}
    assert second["train"]["max_steps"] == 2 and second["train"]["lr"] == 1e-2  # merged over the top level
    # resuming a finished chain skips every stage
    again = api.train(load_recipe(recipe_path), resume=True, **QUIET)
    assert json.loads(RunDir(again.run_dir).report_json.read_text())["stages"] == stages


def test_a_stage_cannot_choose_its_own_base_model(tmp_path: Path, tiny_decoder: Path) -> None:
    raw = _staged(tiny_decoder, tmp_path)
    raw["stages"][1]["model"] = "minilm-l6"
    with pytest.raises(ConfigError, match="cannot be set per stage"):
        recipe_from_dict(raw, base_dir=tmp_path)


def test_stage_errors_name_the_stage(tmp_path: Path, tiny_decoder: Path) -> None:
    raw = _staged(tiny_decoder, tmp_path)
    raw["stages"][1]["train"] = {"learning_rate": 1.0}
    with pytest.raises(ConfigError, match=r"(?s)stages\[1\] 'sft'.*train.learning_rate"):
        recipe_from_dict(raw, base_dir=tmp_path)


def test_mixing_weights() -> None:
    sizes = {"a": 900, "b": 100}
    assert mixing_weights(sizes, "proportional", 2.0, {}) == pytest.approx({"a": 0.9, "b": 0.1})
    assert mixing_weights(sizes, "equal", 2.0, {}) == pytest.approx({"a": 0.5, "b": 0.5})
    assert mixing_weights(sizes, "temperature", 2.0, {}) == pytest.approx({"a": 30 / 40, "b": 10 / 40})
    assert mixing_weights(sizes, "equal", 2.0, {"a": 3.0})["a"] == pytest.approx(0.75)


def test_mix_draws_each_task_by_weight_deterministically() -> None:
    enc = {"a": [Encoded([1], [1]) for _ in range(90)], "b": [Encoded([2], [2]) for _ in range(10)]}
    mixed = mix(enc, {"a": 0.5, "b": 0.5}, seed=0)
    assert len(mixed) == 100 and sum(e.input_ids == [2] for e in mixed) == 50  # b repeats its 10 rows 5 times
    assert [e.input_ids for e in mix(enc, {"a": 0.5, "b": 0.5}, seed=0)] == [e.input_ids for e in mixed]


def test_multitask_run_scores_every_task_on_its_own_test_set(tmp_path: Path, tiny_decoder: Path) -> None:
    sentiment = write_jsonl(tmp_path / "sentiment.jsonl", sentiment_rows(30))
    products = write_jsonl(tmp_path / "products.jsonl", product_rows(30))
    raw = base_recipe(tiny_decoder, "classification", sentiment, tmp_path / "multi", max_steps=3)
    del raw["task"], raw["data"]
    raw["method"] = {"name": "lora", "r": 4, "alpha": 8}
    raw["mixing"] = {"strategy": "equal"}
    raw["tasks"] = [{"name": "sentiment", "task": "classification", "data": {"train": str(sentiment)}},
                    {"name": "products", "task": "extraction", "data": {"train": str(products)}}]
    result = api.train(raw, **QUIET)
    tasks = json.loads((result.run_dir / "report.json").read_text())["tasks"]
    assert {t["name"] for t in tasks} == {"sentiment", "products"}
    assert all(t["weight"] == pytest.approx(0.5) for t in tasks)
    assert "accuracy" in tasks[0]["headline"] and "field_f1" in tasks[1]["headline"]
    # each task folder is an ordinary run: it reloads and predicts
    sub = result.run_dir / "tasks" / "sentiment"
    new = write_jsonl(tmp_path / "new.jsonl", [{"text": "the red lamp is great"}])
    out = api.predict(sub, new)
    assert json.loads(out.read_text())["prediction"] in {"pos", "neg"}


def test_multitask_needs_a_decoder(tmp_path: Path, tiny_encoder: Path) -> None:
    sentiment = write_jsonl(tmp_path / "sentiment.jsonl", sentiment_rows(20))
    raw = base_recipe(tiny_encoder, "classification", sentiment, tmp_path / "multi", max_steps=1)
    del raw["task"], raw["data"]
    raw["tasks"] = [{"name": "a", "task": "classification", "data": {"train": str(sentiment)}},
                    {"name": "b", "task": "classification", "data": {"train": str(sentiment)}}]
    with pytest.raises(ConfigError, match="needs|encoder"):
        api.train(raw, **QUIET)
