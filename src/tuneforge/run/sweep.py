"""``tuneforge sweep``: hyperparameter search over any recipe field with Optuna.

The search space is a small YAML file whose keys are dotted recipe paths::

    metric: accuracy            # validation metric to optimise ('loss' is minimised); default: loss
    evaluations: 4              # validations per trial, the points where poor trials get pruned
    params:
      train.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      train.batch_size: {type: categorical, choices: [16, 32, 64]}
      train.warmup_fraction: {type: float, low: 0.0, high: 0.2}

Each trial is a normal run (its own folder under the study folder) of the recipe with the trial's
values, trained by the one training loop; after each validation the loop calls back
(``on_validation``), the trial reports its score to Optuna, and a median pruner stops trials that are
behind the others at the same step. The recipe's own values are enqueued as trial 0 (when they lie
in the space), so the study always says whether the search beat the defaults.

``fraction`` < 1 scores every trial on the first part of its training run, with the learning-rate
schedule of the whole run, as Oliver and Wang (2024, "Crafting Efficient Fine-Tuning Strategies for
Large Language Models", https://arxiv.org/abs/2407.13906) found that the ranking of configurations
after a fifth of training predicts their final ranking; the best recipe is then trained in full.

Studies live in an SQLite file (``--storage``), so an interrupted sweep continues where it stopped
and ``--trials`` is the total wanted, not the number still to run. ``--workers N`` runs N trials at a
time in separate processes that share the study store; see ``sweep()``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneforge.errors import ConfigError, UserError
from tuneforge.run.composed import train
from tuneforge.run.folder import claim_output, mark_owned
from tuneforge.run.pipeline import as_recipe
from tuneforge.files import write_json_atomic, write_text_atomic

Sampler = Literal["grid", "random", "tpe"]


class ParamSpec(BaseModel):
    """One searched recipe field."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs low < high")
        return self

    def grid(self) -> list[Any]:
        """The values a grid search tries: the choices, or the stepped range."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None:
            raise ValueError("the grid sampler needs 'choices' or a 'step' for every parameter")
        assert self.low is not None and self.high is not None
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(n)]
        return [int(v) for v in values] if self.type == "int" else values

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in (self.choices or [])
        return isinstance(value, (int, float)) and self.low <= value <= self.high  # type: ignore[operator]


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str = "loss"
    evaluations: int = Field(4, ge=1, description="validations per trial: the points where a trial can be pruned")
    params: dict[str, ParamSpec]


def load_space(path: Path | str) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file not found: {path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path}: the search space is not valid:\n" + "\n".join(lines)) from None
    if not space.params:
        raise ConfigError(f"{path}: params is empty; name at least one recipe field to search")
    return space


# ----------------------------------------------------------------------------- dotted recipe paths
def get_path(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"search space: {path!r} is not a field of the recipe (see `tuneforge schema`)")
        node = node[part]
    return node


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _suggest(trial: Any, name: str, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(name, spec.choices)
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


def _sampler(kind: Sampler, space: SearchSpace, seed: int) -> Any:
    import optuna

    if kind == "grid":
        try:
            grid = {name: spec.grid() for name, spec in space.params.items()}
        except ValueError as err:
            raise ConfigError(f"--sampler grid: {err}") from None
        return optuna.samplers.GridSampler(grid, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)


def _estimated_steps(recipe: Any) -> int:
    """Optimizer steps of a run, estimated from the raw training rows (only used to space validations)."""
    from tuneforge.data.readers import read_records
    from tuneforge.train.loop import total_steps

    if recipe.train.max_steps is not None:
        return recipe.train.max_steps
    rows = len(read_records(Path(recipe.data.train)))
    split = recipe.data.split
    carved = (split.validation if recipe.data.validation is None else 0.0) + (split.test if recipe.data.test is None else 0.0)
    n = int(rows * (1 - carved))
    if recipe.data.max_train_rows is not None:
        n = min(n, recipe.data.max_train_rows)
    return total_steps(max(n, 1), recipe.train)


# ----------------------------------------------------------------------------- the study
def _storage(storage: str) -> Any:
    """An Optuna storage from a URL; ``journal:PATH`` is a journal file (safe for processes sharing a disk)."""
    if storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    return storage


def _load_study(storage: str, study_name: str, minimise: bool, sampler: Any) -> Any:
    import optuna

    return optuna.create_study(study_name=study_name, storage=_storage(storage), load_if_exists=True,
                               direction="minimize" if minimise else "maximize", sampler=sampler,
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))


def sweep(recipe_path: Path | str, space_path: Path | str, *, trials: int = 20, sampler: Sampler = "tpe",
          minutes: float | None = None, storage: str | None = None, fraction: float = 1.0,
          output: Path | str | None = None, study_name: str | None = None, seed: int = 0,
          overrides: list[str] | None = None, workers: int = 1, echo: Any = print) -> dict[str, Any]:
    """Run (or continue) an Optuna study over the recipe; write best_recipe.yaml, sweep.json/.md/.png.

    ``workers`` > 1 runs that many trials at once, each worker a process of its own sharing the study
    store (the remaining trials are split between them; give each worker its share of the cores with
    ``OMP_NUM_THREADS``). Workers on other machines join by running the same command with the same
    ``--storage`` (a database URL, or ``journal:PATH`` on a shared disk) and ``--study``; no worker starts
    a trial once the study holds ``trials`` finished ones.
    """
    from tuneforge.evaluate import plots
    from tuneforge.recipe import recipe_to_yaml

    if not 0.0 < fraction <= 1.0:
        raise UserError(f"--fraction must be in (0, 1], got {fraction}")
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    space = load_space(space_path)
    base = as_recipe(recipe_path, overrides)
    base_tree = base.model_dump(mode="json")
    defaults = {name: get_path(base_tree, name) for name in space.params}  # also checks every path exists
    out = Path(output) if output else Path(base.output).with_name(Path(base.output).name + "-sweep")
    claim_output(out, kind="sweep", resume=True)  # a new or empty folder, or an earlier sweep to continue
    out.mkdir(parents=True, exist_ok=True)
    mark_owned(out, "sweep")
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study_name = study_name or "tuneforge"
    minimise = space.metric == "loss"
    study = _load_study(storage, study_name, minimise, _sampler(sampler, space, seed))
    if not study.trials and all(space.params[k].contains(v) for k, v in defaults.items()):
        study.enqueue_trial(defaults, user_attrs={"defaults": True})
    finished = [t for t in study.trials if t.state.is_finished()]
    todo = max(0, trials - len(finished))
    if todo:
        echo(f"sweep: {todo} trial(s) to run ({len(finished)} already in {storage})"
             + (f", {workers} workers" if workers > 1 else ""))
        job = {"recipe": str(recipe_path), "space": str(space_path), "overrides": overrides, "storage": storage,
               "study_name": study_name, "sampler": sampler, "fraction": fraction, "out": str(out),
               "trials": trials, "minutes": minutes}
        shares = [todo // workers + (i < todo % workers) for i in range(workers)]
        helpers = _start_workers(job, shares[1:], seed)
        _optimize(job, study, shares[0], echo)
        for helper in helpers:
            helper.join()
        if any(h.exitcode != 0 for h in helpers):
            raise UserError(f"a sweep worker failed (exit codes {[h.exitcode for h in helpers]}); see its output above")
        study = _load_study(storage, study_name, minimise, _sampler(sampler, space, seed))
    return _write_results(study, base, space, defaults, out, fraction, sampler, recipe_to_yaml, plots, echo)


def _start_workers(job: dict[str, Any], shares: list[int], seed: int) -> list[Any]:
    """Processes (spawned: a fresh interpreter each, no forked torch threads) that run their share of trials."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    helpers = [context.Process(target=_worker, args=(job, n, seed + 1 + i), daemon=False)
               for i, n in enumerate(shares) if n > 0]
    for helper in helpers:
        helper.start()
    return helpers


def _worker(job: dict[str, Any], n_trials: int, seed: int) -> None:
    """One helper worker: the same study, its own sampler seed (so it does not propose its peers' points)."""
    space = load_space(job["space"])
    study = _load_study(job["storage"], job["study_name"], space.metric == "loss", _sampler(job["sampler"], space, seed))
    _optimize(job, study, n_trials, print)


def _optimize(job: dict[str, Any], study: Any, n_trials: int, echo: Any) -> None:
    import optuna

    if n_trials < 1:
        return
    objective = _objective(job, echo)
    stop = optuna.study.MaxTrialsCallback(job["trials"], states=(optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.PRUNED))
    minutes = job["minutes"]
    study.optimize(objective, n_trials=n_trials, timeout=None if minutes is None else minutes * 60,
                   catch=(UserError,), callbacks=[stop])


def _objective(job: dict[str, Any], echo: Any) -> Any:
    """The function Optuna calls per trial: a normal run of the recipe with the trial's values."""
    import optuna

    from tuneforge.recipe import recipe_from_dict

    space = load_space(job["space"])
    base = as_recipe(job["recipe"], job["overrides"])
    base_tree = base.model_dump(mode="json")
    out, fraction, minimise = Path(job["out"]), job["fraction"], space.metric == "loss"
    eval_every = max(1, int(_estimated_steps(base) * fraction / space.evaluations))

    def objective(trial: optuna.Trial) -> float:
        values = {name: _suggest(trial, name, spec) for name, spec in space.params.items()}
        tree = copy.deepcopy(base_tree)
        for name, value in values.items():
            set_path(tree, name, value)
        set_path(tree, "output", str(out / "trials" / f"trial-{trial.number:03d}"))
        set_path(tree, "eval.base", False)  # the base model does not change between trials
        set_path(tree, "data.max_test_rows", 1)  # trials are chosen on validation; the test set stays unseen
        set_path(tree, "train.eval_every", eval_every)
        if space.metric != "loss":  # the validator computes the metric only when early stopping watches it
            stopping = tree["train"].get("early_stopping") or {"patience": 10**6}
            tree["train"]["early_stopping"] = {**stopping, "metric": space.metric}
        recipe = recipe_from_dict(tree, source=f"trial {trial.number}")
        state = {"pruned": False, "value": None}

        def on_validation(step: int, total: int, record: dict[str, Any]) -> bool:
            value = float(record[f"val_{space.metric}"])
            state["value"] = value if state["value"] is None else (min if minimise else max)(state["value"], value)
            trial.report(value, step)
            if trial.should_prune():
                state["pruned"] = True
                return True
            return fraction < 1.0 and step >= fraction * total

        started = time.perf_counter()
        train(recipe, overwrite=True, echo=lambda *_: None, on_validation=on_validation)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        trial.set_user_attr("run", recipe.output.as_posix())
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        echo(f"trial {trial.number}: {values} -> val_{space.metric} {state['value']}"
             + (" (pruned)" if state["pruned"] else ""))
        if state["pruned"]:
            raise optuna.TrialPruned()
        if state["value"] is None:
            raise UserError(f"trial {trial.number} ran no validation: give the recipe a validation split")
        return float(state["value"])

    return objective


def _write_results(study: Any, base: Any, space: SearchSpace, defaults: dict[str, Any], out: Path, fraction: float,
                   sampler: str, recipe_to_yaml: Any, plots: Any, echo: Any) -> dict[str, Any]:
    import optuna

    from tuneforge.recipe import recipe_from_dict

    rows = []
    for t in study.trials:
        intermediate = t.intermediate_values
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "defaults": bool(t.user_attrs.get("defaults")), "seconds": t.user_attrs.get("seconds"),
                     "last_value": intermediate[max(intermediate)] if intermediate else None,
                     "run": t.user_attrs.get("run")})
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError("no trial completed; see the trial folders for the errors")
    best = study.best_trial
    tree = base.model_dump(mode="json")
    for name, value in best.params.items():
        set_path(tree, name, value)
    set_path(tree, "output", str(Path(base.output).with_name(Path(base.output).name + "-best")))
    write_text_atomic(out / "best_recipe.yaml", recipe_to_yaml(recipe_from_dict(tree, check_files=False)))
    default_row = next((r for r in rows if r["defaults"] and r["state"] == "COMPLETE"), None)
    summary = {"metric": space.metric, "direction": study.direction.name.lower(), "sampler": sampler,
               "fraction": fraction, "n_trials": len(rows), "n_complete": len(complete),
               "n_pruned": sum(r["state"] == "PRUNED" for r in rows), "best": {"number": best.number,
               "value": best.value, "params": best.params}, "defaults": {"params": defaults,
               "value": default_row["value"] if default_row else None}, "trials": rows,
               "seconds": sum(r["seconds"] or 0 for r in rows)}
    write_json_atomic(out / "sweep.json", summary)
    sign = 1 if summary["direction"] == "maximize" else -1  # the plot's "best so far" is a running maximum
    flipped = [{**r, "value": None if r["value"] is None else sign * r["value"],
                "last_value": None if r["last_value"] is None else sign * r["last_value"]} for r in rows]
    (out / "sweep.png").write_bytes(plots.sweep_history(flipped, space.metric if sign > 0 else f"-{space.metric}"))
    write_text_atomic(out / "sweep.md", render_markdown(summary))
    echo(render_markdown(summary))
    echo(f"best recipe: {out / 'best_recipe.yaml'}; study: {out}")
    return summary


def render_markdown(summary: dict[str, Any]) -> str:
    names = list(summary["defaults"]["params"])
    md = [f"# tuneforge sweep: validation {summary['metric']} ({summary['direction']})", "",
          f"{summary['n_trials']} trials ({summary['n_complete']} complete, {summary['n_pruned']} pruned), sampler "
          f"{summary['sampler']}, each scored on {summary['fraction']:.0%} of its training run, "
          f"{summary['seconds']:.0f} s of training in all.", "",
          f"Best: trial {summary['best']['number']}, {summary['metric']} = {summary['best']['value']:.4f}; "
          + (f"recipe defaults: {summary['defaults']['value']:.4f}." if summary["defaults"]["value"] is not None
             else "recipe defaults were not a trial (outside the space)."), "",
          "| trial | state | value | " + " | ".join(names) + " | seconds |", "|---" * (len(names) + 4) + "|"]
    for r in summary["trials"]:
        value = "-" if r["value"] is None else f"{r['value']:.4f}"
        params = [json.dumps(r["params"].get(n)) for n in names]
        tag = " (defaults)" if r["defaults"] else ""
        md.append(f"| {r['number']}{tag} | {r['state']} | {value} | " + " | ".join(params)
                  + f" | {(r['seconds'] or 0):.0f} |")
    return "\n".join(md) + "\n"
