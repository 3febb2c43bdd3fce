"""tuneforge sweep on a tiny encoder: trials are real runs, pruning and fractions stop them, studies resume."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge.errors import ConfigError
from tuneforge.run.sweep import ParamSpec, load_space, sweep


def _setup(tmp_path: Path, tiny_encoder: Path, params: dict) -> tuple[Path, Path]:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(60))
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=2, lr=1e-4)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "accuracy", "evaluations": 2, "params": params}))
    return recipe_path, space


def test_sweep_runs_trials_writes_the_best_recipe_and_resumes(tmp_path: Path, tiny_encoder: Path) -> None:
    recipe, space = _setup(tmp_path, tiny_encoder, {"train.lr": {"type": "categorical", "choices": [1e-4, 3e-3]}})
    out = tmp_path / "study"
    summary = sweep(recipe, space, trials=2, sampler="grid", output=out, echo=lambda *_: None)
    assert summary["n_trials"] == 2
    assert summary["trials"][0]["defaults"] and summary["trials"][0]["params"] == {"train.lr": 1e-4}
    best = yaml.safe_load((out / "best_recipe.yaml").read_text())
    assert best["train"]["lr"] == summary["best"]["params"]["train.lr"]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    for row in summary["trials"]:  # each trial is a real run whose validation log holds the reported value
        logged = [json.loads(x) for x in (Path(row["run"]) / "metrics.jsonl").read_text().splitlines()]
        vals = [r["val_accuracy"] for r in logged if r.get("event") == "validation"]
        assert row["value"] == max(vals)
    again = sweep(recipe, space, trials=2, sampler="grid", output=out, echo=lambda *_: None)  # nothing left to do
    assert again["n_trials"] == 2
    study = optuna.load_study(study_name="tuneforge", storage=f"sqlite:///{(out / 'study.db').resolve()}")
    assert len(study.trials) == 2


def test_fraction_stops_each_trial_early(tmp_path: Path, tiny_encoder: Path) -> None:
    recipe, space = _setup(tmp_path, tiny_encoder,
                           {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    summary = sweep(recipe, space, trials=2, sampler="random", fraction=0.5, output=tmp_path / "s",
                    echo=lambda *_: None)
    for row in summary["trials"]:
        logged = [json.loads(x) for x in (Path(row["run"]) / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in logged if "event" not in r]
        per_epoch = 1 / logged[0]["epoch"]  # the first step's epoch is 1 / steps per epoch
        assert max(steps) < 2 * per_epoch  # stopped before the 2 epochs the recipe asks for


def test_bad_spaces_are_refused_with_their_path(tmp_path: Path, tiny_encoder: Path) -> None:
    recipe, space = _setup(tmp_path, tiny_encoder, {"train.learning_rate": {"type": "float", "low": 0.1, "high": 1}})
    with pytest.raises(ConfigError, match="train.learning_rate"):
        sweep(recipe, space, trials=1, output=tmp_path / "s", echo=lambda *_: None)
    space.write_text(yaml.safe_dump({"params": {"train.lr": {"type": "float", "low": 1, "high": 0.1}}}))
    with pytest.raises(ConfigError, match="low < high"):
        load_space(space)
    with pytest.raises(ValueError, match="step"):
        ParamSpec(type="float", low=0.0, high=1.0).grid()
    assert ParamSpec(type="int", low=8, high=32, step=8).grid() == [8, 16, 24, 32]


def test_parallel_workers_share_one_study(tmp_path: Path, tiny_encoder: Path) -> None:
    recipe, space = _setup(tmp_path, tiny_encoder,
                           {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    out = tmp_path / "study"
    summary = sweep(recipe, space, trials=4, sampler="random", output=out, workers=2, echo=lambda *_: None)
    assert summary["n_trials"] == 4 and summary["n_complete"] + summary["n_pruned"] == 4
    study = optuna.load_study(study_name="tuneforge", storage=f"sqlite:///{(out / 'study.db').resolve()}")
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # two processes ran trials
    assert len({json.dumps(t.params) for t in study.trials}) == 4  # the workers did not propose the same points


def test_journal_storage_is_accepted(tmp_path: Path, tiny_encoder: Path) -> None:
    recipe, space = _setup(tmp_path, tiny_encoder, {"train.lr": {"type": "categorical", "choices": [1e-4, 3e-3]}})
    journal = tmp_path / "study.journal"
    summary = sweep(recipe, space, trials=1, sampler="grid", output=tmp_path / "s", storage=f"journal:{journal}",
                    echo=lambda *_: None)
    assert summary["n_trials"] == 1 and journal.is_file()
