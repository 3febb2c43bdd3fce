"""Experiment trackers: a run's metrics also reach TensorBoard, MLflow, Weights & Biases or trackio.

Why through accelerate's trackers: they are the field's adapters for these tools, already used by
the loop's engine, so tuneforge owns no client code; this module only picks where each one writes.
Nothing leaves the machine unless the user says so: TensorBoard writes event files under the run
folder; MLflow writes a file store under the run folder unless ``MLFLOW_TRACKING_URI`` names
another; wandb runs in offline mode unless ``WANDB_MODE`` says otherwise; trackio is local by design.

What each tracker receives: the resolved recipe as parameters (flattened: ``train.lr``), every
step's line of metrics.jsonl, every validation (``val/...``) and, at the end, the report's headline
(``test/<metric>`` tuned, ``test_base/<metric>`` and ``test_delta/<metric>``) as final metrics.
``export_catalogue`` copies the run catalogue into an MLflow store after the fact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

from tuneforge.extras import require
from tuneforge.recipe import Recipe
from tuneforge.registry import Registry
from tuneforge.run.catalogue import RunEntry, RunRegistry
from tuneforge.run.folder import RunDir
from tuneforge.train.hooks import TrainHook

#: tracker name -> a function of (the run folder's tracking folder, the run's name) giving a started tracker
TRACKERS: Registry[Callable[[Path, str], GeneralTracker]] = Registry("tracker")


@TRACKERS.register("tensorboard")
def _tensorboard(folder: Path, name: str) -> GeneralTracker:
    require("tensorboard", "tracking")
    return TensorBoardTracker(name, folder)


@TRACKERS.register("mlflow")
def _mlflow(folder: Path, name: str) -> GeneralTracker:
    mlflow = require("mlflow", "tracking")
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # else mlflow's default store: a database in the working folder
        mlflow.set_tracking_uri(f"sqlite:///{(folder / 'mlflow.db').resolve()}")
    # accelerate's logging_dir is the artifact location of a new experiment (the tracking URI is set above)
    return MLflowTracker(experiment_name="tuneforge", logging_dir=(folder / "mlartifacts").resolve().as_uri(),
                         run_name=name)


@TRACKERS.register("wandb")
def _wandb(folder: Path, name: str) -> GeneralTracker:
    require("wandb", "tracking")
    os.environ.setdefault("WANDB_MODE", "offline")  # offline unless the user chose otherwise
    return WandBTracker(name, project="tuneforge", dir=str(folder))


@TRACKERS.register("trackio")
def _trackio(folder: Path, name: str) -> GeneralTracker:
    require("trackio", "tracking")
    return TrackioTracker(name, project="tuneforge")


def flat_params(tree: Any, prefix: str = "") -> dict[str, str | int | float | bool]:
    """A nested recipe as ``section.key`` parameters; lists and None as JSON text, as trackers take scalars only."""
    if isinstance(tree, dict):
        out: dict[str, str | int | float | bool] = {}
        for key, value in tree.items():
            out.update(flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    scalar = isinstance(tree, (str, int, float, bool))
    return {prefix: tree if scalar else json.dumps(tree, default=str)}


def final_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's headline as final metrics: tuned scores, the base's, and the change."""
    out: dict[str, float] = {}
    for metric in report.get("headline", []):
        for key, source in (("test", "tuned"), ("test_base", "base"), ("test_delta", "delta")):
            value = (report.get(source) or {}).get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{key}/{metric}"] = float(value)
    return out


def _numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {prefix + k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


class TrackingHook(TrainHook):
    """Copies what the loop logs to the trackers named in ``train.report_to`` (main process only)."""

    label = "tracking"

    def __init__(self, trackers: list[GeneralTracker], params: dict[str, Any]) -> None:
        self.trackers = trackers
        self.params = params
        self.step = 0

    @classmethod
    def planned(cls, recipe: Recipe, run_root: Path) -> TrackingHook | None:
        """The hook for ``recipe.train.report_to``, or None when it names no tracker."""
        if not recipe.train.report_to:
            return None
        folder = run_root / "tracking"
        folder.mkdir(parents=True, exist_ok=True)
        trackers = [TRACKERS.get(name)(folder, run_root.name) for name in recipe.train.report_to]
        for tracker in trackers:
            tracker.start()
        return cls(trackers, flat_params(recipe.model_dump(mode="json")))

    def _log(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def on_start(self, model: Any) -> None:
        for tracker in self.trackers:
            tracker.store_init_configuration(self.params)

    def on_logged(self, entry: dict[str, Any]) -> None:
        self.step = int(entry["step"])
        self._log(_numbers(entry, "train/"), self.step)

    def on_validation(self, step: int, total: int, record: dict[str, Any]) -> bool:
        self._log({"val/" + k[len("val_"):]: v for k, v in _numbers(record).items() if k.startswith("val_")}, step)
        return False

    def finish(self, report: dict[str, Any] | None) -> None:
        """The report's headline as final metrics, then each tracker closed (files flushed)."""
        if report:
            self._log(final_metrics(report), self.step)
        for tracker in self.trackers:
            tracker.finish()


def export_catalogue(catalogue: RunRegistry, tracking_uri: str, experiment: str = "tuneforge") -> list[str]:
    """Copy every catalogued run into an MLflow store as a finished MLflow run; returns the MLflow run ids.

    Each run gets its recipe as parameters (from the run folder, when it is still there), its task, model,
    method, catalogue id and tags as tags, and its headline as metrics (``test/...`` as in a live run).
    """
    require("mlflow", "tracking")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    ids = []
    for entry in catalogue.list():
        run = client.create_run(experiment_id, run_name=entry.name, tags=_tags(entry))
        for key, value in _recipe_params(Path(entry.path)).items():
            client.log_param(run.info.run_id, key, value)
        for key, value in final_metrics(entry.summary).items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, status="FINISHED" if entry.state == "complete" else "FAILED")
        ids.append(run.info.run_id)
    return ids


def _tags(entry: RunEntry) -> dict[str, str]:
    return {"tuneforge.id": str(entry.id), "tuneforge.path": entry.path, "task": entry.task, "model": entry.model,
            "method": entry.method, "state": entry.state, **{f"tag.{t}": "1" for t in entry.tags},
            **{f"production.{p}": "1" for p in entry.production}}


def _recipe_params(run_dir: Path) -> dict[str, str | int | float | bool]:
    path = RunDir(run_dir).recipe
    return flat_params(yaml.safe_load(path.read_text(encoding="utf-8"))) if path.is_file() else {}
