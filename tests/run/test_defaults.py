"""The defaults a recipe gets when it leaves out method or train: one test per rule, then the pipeline end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import sentiment_rows, write_jsonl
from tuneforge.run.defaults import (
    DataShape, ModelShape, as_overrides, budget_choice, choose, data_shape,
)

ENCODER = ModelShape(kind="encoder", params=22_000_000, new_head=True)
DECODER = ModelShape(kind="decoder", params=135_000_000, new_head=False)
FEW_SHOT = DataShape(rows=1_152, validation_rows=128, classes=64, smallest_class=18, largest_class=18, mean_tokens=9)
LARGE = DataShape(rows=12_400, validation_rows=1_380, classes=7, smallest_class=1_700, largest_class=1_850,
                  mean_tokens=11)


def picked(choices: list, key: str) -> object:
    return {c.key: c.value for c in choices}[key]


def test_a_new_many_way_head_gets_discriminative_rates_and_its_own_head_rate() -> None:
    choices = choose(FEW_SHOT, ENCODER, set(), None)
    method = picked(choices, "method")
    assert method["name"] == "discriminative" and method["head_lr"] > 10 * picked(choices, "train.lr")
    assert picked(choices, "train.head_init") == "random"  # measured: the class-mean start lost on hwu64
    assert all(c.reason for c in choices)


def test_few_rows_many_classes_get_small_batches_and_enough_epochs_for_ten_updates_per_class() -> None:
    choices = choose(FEW_SHOT, ENCODER, set(), None)
    assert picked(choices, "train.batch_size") == 16
    steps = picked(choices, "train.epochs") * -(-FEW_SHOT.rows // 16)
    assert steps >= 10 * 64
    assert picked(choices, "train.eval_every") <= steps // 5  # several validations, so early stopping can act


def test_a_large_set_gets_large_batches_and_one_epoch() -> None:
    choices = choose(LARGE, ENCODER, set(), None)
    assert picked(choices, "train.batch_size") == 32
    assert picked(choices, "train.epochs") == 1.0


def test_balance_decides_the_early_stopping_metric() -> None:
    balanced = picked(choose(LARGE, ENCODER, set(), None), "train.early_stopping")
    skewed = DataShape(rows=2_000, validation_rows=200, classes=3, smallest_class=50, largest_class=1_500)
    assert balanced["metric"] == "accuracy" and balanced["patience"] == 3
    assert picked(choose(FEW_SHOT, ENCODER, set(), None), "train.early_stopping")["patience"] == 5  # 128 noisy rows
    assert picked(choose(skewed, ENCODER, set(), None), "train.early_stopping")["metric"] == "macro_f1"


def test_no_validation_rows_means_no_early_stopping_and_no_validation_spacing() -> None:
    none = DataShape(rows=500, validation_rows=0, classes=4, smallest_class=100, largest_class=150)
    keys = {c.key for c in choose(none, ENCODER, set(), None)}
    assert "train.early_stopping" not in keys and "train.eval_every" not in keys


def test_every_given_key_wins_and_given_steps_leave_the_validation_spacing_alone() -> None:
    choices = choose(FEW_SHOT, ENCODER, {"train.lr", "train.epochs"}, None)
    keys = {c.key for c in choices}
    assert "train.lr" not in keys and "train.epochs" not in keys and "train.eval_every" not in keys
    assert "method" in keys


def test_a_given_method_is_kept_and_the_rate_follows_it() -> None:
    choices = choose(FEW_SHOT, DECODER, set(), "lora")
    assert "method" not in {c.key for c in choices}
    assert picked(choices, "train.lr") == 2e-4


def test_decoders_get_lora_with_a_rank_that_grows_with_the_data() -> None:
    small = DataShape(rows=300, validation_rows=30)
    large = DataShape(rows=20_000, validation_rows=500)
    r_small = picked(choose(small, DECODER, set(), None), "method")["r"]
    r_large = picked(choose(large, DECODER, set(), None), "method")["r"]
    assert picked(choose(small, DECODER, set(), None), "method")["name"] == "lora"
    assert r_small < r_large
    assert "train.head_init" not in {c.key for c in choose(small, DECODER, set(), None)}


def test_the_time_budget_caps_the_steps_from_the_measured_rate() -> None:
    assert budget_choice(100, 0.5, 300) is None  # 50 s fits
    capped = budget_choice(1_000, 0.5, 300)
    assert capped is not None and capped.key == "train.max_steps" and capped.value == int(0.85 * 300 / 0.5)


def test_data_shape_counts_classes_and_balance() -> None:
    shape = data_shape(6, 2, [3, 4, 5, 3, 4, 5], ["a", "a", "a", "a", "b", "b"])
    assert (shape.classes, shape.smallest_class, shape.largest_class, shape.imbalance) == (2, 2, 4, 2.0)
    assert data_shape(3, 0, [1, 2, 3]).classes is None


def test_choices_become_nested_recipe_keys() -> None:
    choices = choose(FEW_SHOT, ENCODER, set(), None)
    nested = as_overrides(choices)
    assert nested["train"]["batch_size"] == 16 and nested["method"]["name"] == "discriminative"


# ----------------------------------------------------------------------------- the pipeline
def three_line(tmp_path: Path, model: Path, **extra: object) -> dict:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(60))
    return {"task": "classification", "model": str(model), "data": {"train": str(train)},
            "eval": {"batch_size": 8}, "output": str(tmp_path / "run"), **extra}


def test_a_three_line_recipe_trains_with_the_chosen_settings_and_reports_them(tmp_path: Path,
                                                                             tiny_encoder: Path) -> None:
    from tuneforge import api

    lines: list[str] = []
    result = api.train(three_line(tmp_path, tiny_encoder, train={"lr": 5e-4, "head_init": "class_mean"}),
                       echo=lines.append)
    saved = yaml.safe_load((result.run_dir / "recipe.yaml").read_text())
    assert saved["method"]["name"] == "discriminative"
    assert saved["train"]["lr"] == 5e-4 and saved["train"]["head_init"] == "class_mean"  # given keys win
    report = json.loads((result.run_dir / "report.json").read_text())
    keys = {c["key"] for c in report["choices"]}
    assert "train.lr" not in keys and "train.head_init" not in keys and "method" in keys
    assert set(report["phases"]) == {"base_scoring_s", "training_s", "tuned_scoring_s", "baselines_s"}
    assert report["head_init"]["labels_with_rows"] == 2
    text = "\n".join(lines)
    assert "chosen for you" in text and "train.batch_size 16:" in text and "head started from class means" in text
    assert "## Chosen for you" in (result.run_dir / "report.md").read_text()


def test_a_recipe_that_gives_method_and_train_gets_nothing_chosen(tmp_path: Path, tiny_encoder: Path) -> None:
    from tuneforge import api

    recipe = three_line(tmp_path, tiny_encoder, method={"name": "full"},
                        train={"epochs": 1, "batch_size": 8, "max_length": 32}, eval={"baselines": []})
    result = api.train(recipe)
    report = json.loads((result.run_dir / "report.json").read_text())
    assert "choices" not in report and "baselines" not in report
    assert yaml.safe_load((result.run_dir / "recipe.yaml").read_text())["train"]["head_init"] == "random"


def test_a_tight_time_budget_cuts_the_chosen_steps(tmp_path: Path, tiny_encoder: Path) -> None:
    from tuneforge import api

    result = api.train(three_line(tmp_path, tiny_encoder, train={"time_budget": 0.001}, eval={"baselines": []}),
                       dry_run=True, echo=lambda _line: None)
    assert result.preflight is not None and result.preflight.steps == 1


def test_an_unknown_baseline_fails_before_training(tmp_path: Path, tiny_encoder: Path) -> None:
    from tuneforge import api
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown baseline 'knnn'"):
        api.train(three_line(tmp_path, tiny_encoder, eval={"baselines": ["knnn"]}), dry_run=True)
