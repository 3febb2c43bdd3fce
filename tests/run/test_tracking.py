"""train.report_to: TensorBoard event files and an MLflow store get the recipe, every step and the headline;
`tuneforge runs export --mlflow` copies the catalogue into an MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.recipe import recipe_from_dict
from tuneforge.run.tracking import final_metrics, flat_params

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tracked")
    catalogue = tmp / "runs.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_REGISTRY", str(catalogue))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        train = write_jsonl(tmp / "train.jsonl", sentiment_rows(40))
        raw = base_recipe(tiny_encoder, "classification", train, tmp / "run", epochs=1,
                          report_to=["tensorboard", "mlflow"])
        raw["eval"]["base"] = True
        result = api.train(recipe_from_dict(raw), echo=lambda *a: None)
    return result.run_dir, catalogue


def test_tensorboard_event_files_hold_steps_hparams_and_the_headline(tracked_run: tuple[Path, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    [folder] = [p for p in (run_dir / "tracking").iterdir() if p.name == run_dir.name]
    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "test/accuracy", "test_base/accuracy", "test_delta/accuracy"} <= scalars
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, len(losses) + 1)) and len(losses) >= 5
    logged = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses[0].value == pytest.approx(json.loads(logged[0])["loss"], rel=1e-6)
    report = json.loads((run_dir / "report.json").read_text())
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(report["tuned"]["accuracy"], rel=1e-6)
    hparams = [p for p in folder.rglob("events.out.tfevents*") if p.parent != folder]
    assert hparams, "the resolved recipe is written as hparams (a sub-folder of event files)"


def test_mlflow_run_has_the_recipe_as_params_and_the_headline_as_metrics(tracked_run: tuple[Path, Path]) -> None:
    run_dir, _ = tracked_run
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'tracking' / 'mlflow.db').resolve()}")
    [run] = client.search_runs([client.get_experiment_by_name("tuneforge").experiment_id])
    assert run.data.params["train.lr"] == "0.01" and run.data.params["task"] == "classification"
    report = json.loads((run_dir / "report.json").read_text())
    assert run.data.metrics["test/accuracy"] == pytest.approx(report["tuned"]["accuracy"])
    assert "train/loss" in run.data.metrics and run.info.status == "FINISHED"


def test_runs_export_copies_the_catalogue_into_mlflow(tracked_run: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, catalogue = tracked_run
    uri = f"sqlite:///{(tmp_path / 'store.db').resolve()}"
    assert main(["runs", "--db", str(catalogue), "export", "--mlflow", uri]) == 0
    assert "copied 1 run(s)" in capsys.readouterr().out
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("tuneforge").experiment_id])
    report = json.loads((run_dir / "report.json").read_text())
    assert run.data.metrics["test/accuracy"] == pytest.approx(report["tuned"]["accuracy"])
    assert run.data.params["method.name"] == "full" and run.data.tags["tuneforge.path"] == str(run_dir)


def test_flat_params_and_final_metrics() -> None:
    assert flat_params({"train": {"lr": 0.1, "report_to": ["mlflow"], "dropout": None}}) == {
        "train.lr": 0.1, "train.report_to": '["mlflow"]', "train.dropout": "null"}
    report = {"headline": ["f1"], "tuned": {"f1": 0.8}, "base": {"f1": 0.5}, "delta": {"f1": 0.3}}
    assert final_metrics(report) == {"test/f1": 0.8, "test_base/f1": 0.5, "test_delta/f1": 0.3}


def test_an_unknown_tracker_is_a_recipe_error(tiny_encoder: Path, tmp_path: Path) -> None:
    from tuneforge.errors import ConfigError

    raw = base_recipe(tiny_encoder, "classification", tmp_path / "t.jsonl", tmp_path / "run", report_to=["neptune"])
    with pytest.raises(ConfigError, match="report_to"):
        recipe_from_dict(raw, check_files=False)
