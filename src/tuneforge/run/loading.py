"""Opening a run: its recipe, its task as trained, its saved splits and its model.

Every reader of a finished run folder comes here (``evaluate``, ``predict``, ``export``, the server,
the compare and robustness reports, compression), so a damaged folder is named the same way for all
of them and a compressed folder opens like any run. Building a task here also hands it the way to open
another run as a judge (``Task.open_judge``), so no task reaches up into the run layer itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, cast

from safetensors import safe_open
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from tuneforge.compress.base import CompressConfig
from tuneforge.compress.store import build_compressed, read_compression
from tuneforge.errors import ConfigError, UserError
from tuneforge.methods import get_method
from tuneforge.methods.base import Method
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import ResolvedModel, resolve_model
from tuneforge.models.surgery import keep_layers, set_dropout
from tuneforge.preference.judge import Judge
from tuneforge.methods.full import FullMethod
from tuneforge.recipe import Recipe, load_yaml, read_utf8, recipe_from_dict
from tuneforge.run.folder import RunDir
from tuneforge.run.splits import load_saved_split
from tuneforge.tasks.base import Example, JudgeFn, Task, get_task


@dataclass
class Loaded:
    """A model ready to predict: the recipe, its task (schema fitted), the model and its method."""

    recipe: Recipe
    task: Task
    model: nn.Module
    method: Method[Any]
    resolved: ResolvedModel


def build_task(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, model_kind: str) -> Task:
    """The recipe's task, able to open a reward-model run as a judge (win rate, RL reward)."""
    task = get_task(recipe, tokenizer, model_kind)
    task.open_judge = open_judge
    return task


def model_for(recipe: Recipe, task: Task, resolved: ResolvedModel, device: str) -> tuple[nn.Module, Method[Any]]:
    """Base model with the method applied; seeded so a new head starts the same every time."""
    set_seed(recipe.train.seed)
    labels = task.schema.get("labels") if task.head == "sequence_classification" else None
    method = get_method(recipe.method)
    model = load_model(resolved, head=task.head, num_labels=len(labels) if labels else None,
                       id2label=dict(enumerate(labels)) if labels else None,
                       attn_implementation=recipe.train.attention, **method.load_options(device))
    if recipe.model_layers is not None:
        keep_layers(model, recipe.model_layers)
    if recipe.train.dropout is not None:
        set_dropout(model, recipe.train.dropout)
    return method.prepare(model, task.head).to(device), method


def open_run(run_dir: Path | str) -> tuple[RunDir, Recipe]:
    """The folder and recipe of a finished run; a folder that is not one, or is damaged, is named."""
    run = RunDir(run_dir)
    if not run.recipe.is_file() or not (run.model / "trainable.safetensors").is_file():
        raise UserError(f"{run.root} is not a finished tuneforge run (no recipe.yaml or model/); "
                        "train one with `tuneforge train RECIPE`")
    try:
        # The run's own data/ holds the splits, so the original files may have moved since.
        raw = load_yaml(read_utf8(run.recipe), str(run.recipe))
        if isinstance(raw, dict):  # permission to run recipe code is per process, never granted by a saved run
            raw.pop("allow_code", None)
        recipe = recipe_from_dict(raw, source=str(run.recipe), check_files=False)
    except ConfigError as err:
        raise damaged(run, str(err)) from None
    check_weights(run, run.model / "trainable.safetensors")
    return run, recipe


def damaged(run: RunDir, problem: str) -> UserError:
    """The error for a run folder whose own files no longer read (edited, truncated, partly deleted)."""
    return UserError(f"the run folder {run.root} is damaged: {problem}; restore the file from a backup, "
                     "or train the run again")


def check_weights(run: RunDir, path: Path) -> None:
    """Open a safetensors file's header (cheap: nothing is read into memory) so that a truncated or
    overwritten file is named here rather than failing deep inside the model loading."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
        raise damaged(run, f"{path} cannot be read as safetensors ({err})") from None


def load_task(run_dir: Path | str) -> tuple[Recipe, Task, ResolvedModel]:
    """The run's recipe and task (schema as trained), without loading any model weights."""
    run, recipe = open_run(run_dir)
    resolved = resolve_model(recipe.model, allow_hub=recipe.allow_hub)
    task = build_task(recipe, load_tokenizer(run.model), resolved.kind)
    schema_path = run.data / "schema.json"
    try:
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # missing, unreadable, not UTF-8 or not JSON
        raise damaged(run, f"{schema_path} cannot be read ({err})") from None
    if not isinstance(schema, dict):
        raise damaged(run, f"{schema_path} holds a JSON {type(schema).__name__}, not an object")
    task.schema = schema
    return recipe, task, resolved


def load_split(run_dir: Path | str, task: Task, name: str) -> list[Example]:
    """One of the run's saved splits (train, validation, test), parsed by its task."""
    run = RunDir(run_dir)
    path = run.data / f"{name}.jsonl"
    try:
        records = load_saved_split(run.data, name)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        raise damaged(run, f"{path} cannot be read ({type(err).__name__}: {err})") from None
    return task.parse(records, f"the {name} data")


def load_run(run_dir: Path | str, *, device: str = "cpu", tuned: bool = True) -> Loaded:
    """The run's task and model; ``tuned=False`` gives the untouched base model instead."""
    run = RunDir(run_dir)
    recipe, task, resolved = load_task(run_dir)
    if tuned and (run.root / "compression.json").is_file():  # written by `tuneforge compress`
        return load_compressed(run, recipe, task, resolved)
    model, method = model_for(recipe, task, resolved, device)
    if tuned:
        method.load_trainable(model, run.load_trainable(run.model))
    model.eval()
    return Loaded(recipe, task, model, method, resolved)


def load_compressed(run: RunDir, recipe: Recipe, task: Task, resolved: ResolvedModel) -> Loaded:
    """The compressed model of ``run`` with the run's task: what ``load_run`` returns for such a folder.

    Its ``method`` is ``full``: adapters were merged before compressing, so nothing is left to merge.
    """
    cfg = CompressConfig(**read_compression(run.root)["config"])
    model = build_compressed(run.model, task.head, cfg)
    return Loaded(recipe, task, model, get_method(FullMethod()), resolved)


def open_judge(run_dir: Path) -> JudgeFn:
    """A finished reward_model run as a judge: its ``score`` of (prompt messages, answer) pairs."""
    loaded = load_run(run_dir)
    return Judge(loaded.task, loaded.model, run_dir).score


@dataclass
class LabelModel:
    """A finished classification run as the data tools use it: its labels, P(label | text), and the predicted
    label of each text. Why here: active learning and the synthetic-data label check (``data/``) work on a
    trained model, and ``data/`` sits below the run layer, so the run layer opens the run and hands this in."""

    labels: list[str]
    probabilities: Callable[[list[str]], list[list[float]]]

    def predict(self, texts: list[str]) -> list[str]:
        """The most probable label of each text."""
        return [self.labels[max(range(len(row)), key=row.__getitem__)] for row in self.probabilities(texts)]


def label_model(run_dir: Path | str, purpose: str) -> LabelModel:
    """The classification run at ``run_dir`` for ``purpose`` (said in the error when the run predicts no label)."""
    loaded = load_run(run_dir)
    task = loaded.task
    if not task.predicts_labels:
        raise UserError(f"{run_dir} is a {task.name} run; {purpose} needs a classification run")
    return LabelModel(labels=list(task.schema["labels"]),
                      probabilities=lambda texts: task.label_probabilities(cast(PreTrainedModel, loaded.model), texts))
