"""The steps of a run, as public functions: the one path from a recipe to a finished run folder.

``train`` runs one recipe end to end: prepare the output -> read and split the data -> load the model
and method -> preflight -> base scores -> the one training loop -> save -> tuned scores -> finish
(report) -> document (model card, catalogue). ``evaluate`` and ``predict`` reopen a finished run
(:mod:`tuneforge.run.loading`). Each step is a public function so that staged chains and multi-task
mixtures (:mod:`tuneforge.run.stages`, :mod:`tuneforge.run.multitask`), sweeps and a studio compose the
same steps rather than copies of them. ``tuneforge.api`` is a thin facade over this module.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import accelerate
import peft
import torch
import transformers
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuneforge.accel.allocator import loaded_allocator
from tuneforge.data.readers import read_records
from tuneforge.errors import ConfigError, UserError
from tuneforge.evaluate.baselines import BASELINES, BaselineContext
from tuneforge.evaluate.golden import gate, run_cases
from tuneforge.evaluate.report import (
    baseline_comparison, baseline_table, build_report, headline_table, model_scores, render_markdown, render_table,
)
from tuneforge.evaluate.report_page import add_analysis, render_html, slice_fields
from tuneforge.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from tuneforge.methods import count_parameters
from tuneforge.methods.base import Method
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import Recipe, load_recipe, recipe_from_dict, recipe_to_yaml
from tuneforge.run.catalogue import register_finished_run
from tuneforge.run.defaults import (
    Choice, InitialisesHead, ModelShape, as_overrides, budget_choice, choose, data_shape, model_params,
)
from tuneforge.run.folder import RunDir, claim_output, mark_owned, remove_owned
from tuneforge.run.loading import build_task, load_run, load_split, model_for, open_run
from tuneforge.run.model_card import write_model_card
from tuneforge.run.splits import Splits, parse_splits, read_splits, save_splits, split_sources
from tuneforge.run.tracking import TrackingHook
from tuneforge.tasks.base import Encoded, Example, Task, TaskSettings, mean_loss
from tuneforge.tasks.encode_cache import encode_cached
from tuneforge.train.guards import ForgettingCheck, training_set
from tuneforge.train.forgetting import ForgettingHook
from tuneforge.train.hooks import OnValidation
from tuneforge.train.loop import ValidationHook, fit, total_steps
from tuneforge.train.preflight import Preflight, resolve_device, resolve_precision, run_preflight
from tuneforge.train.privacy import DPSGD

__all__ = ["RecipeLike", "TrainResult", "as_recipe", "base_scores", "check_early_stopping_metric", "check_same_data",
           "document_and_register", "environment", "evaluate", "finish", "folder_bytes", "model_for",
           "predict", "prepare_output", "save_model", "score", "train", "train_and_report", "validator",
           "write_run_start"]

RecipeLike = Recipe | str | Path | dict


def as_recipe(recipe: RecipeLike, overrides: list[str] | None = None) -> Recipe:
    """A validated recipe from a recipe, a YAML path (with ``a.b=c`` overrides) or a plain dict."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return recipe_from_dict(recipe)
    return load_recipe(recipe, overrides)


def score(task: Task, model: nn.Module, examples: list[Example]) -> dict[str, Any]:
    """The task's scores, per-item scores and predictions of ``model`` on ``examples``."""
    predictions = task.predict(model, examples)
    extra = task.extra_eval(model, examples)
    return {"scores": model_scores(task, examples, predictions, extra),
            "items": task.item_scores(examples, predictions), "predictions": predictions}


def environment(device: str, precision: str) -> dict[str, Any]:
    """Versions and hardware of this run, written to ``environment.json`` so a run can be audited."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "accelerate": accelerate.__version__,
            "device": device, "mixed_precision": precision, "cpu_threads": torch.get_num_threads(),
            "allocator": loaded_allocator(),
            "processes": accelerate.PartialState().num_processes}


def prepare_output(run: RunDir, *, resume: bool, overwrite: bool, recipe_yaml: str) -> None:
    """Refuse an output folder that is not ours before any work; ``claim_output`` says why."""
    claim = claim_output(run.root, kind="run", overwrite=overwrite, resume=resume)
    if claim in ("new", "replace"):
        return  # a replaced run is deleted in write_run_start, once the recipe and data have passed every check
    if run.is_complete():
        raise UserError(f"{run.root} already holds a finished run; pick another `output`, or pass --overwrite")
    if claim == "exists":
        raise UserError(f"{run.root} holds an unfinished run; "
                        "pass --resume to continue it or --overwrite to start again")
    choices = run.root / CHOICES  # the recipe as given: what tuneforge chose is not the user's to repeat
    saved = json.loads(choices.read_text(encoding="utf-8"))["given_recipe"] if choices.is_file() else (
        run.recipe.read_text(encoding="utf-8") if run.recipe.is_file() else None)
    if saved is not None and saved != recipe_yaml:
        raise UserError(f"cannot resume {run.root}: the recipe differs from the one it was started with "
                        f"({run.recipe}); use the same recipe, or --overwrite")


# ----------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    run_dir: Path
    report: dict[str, Any] | None
    preflight: Preflight | None  # None for a run made of runs (stages, tasks): each part has its own


def train(recipe: RecipeLike, *, resume: bool = False, dry_run: bool = False, overwrite: bool = False,
          overrides: list[str] | None = None, echo: Any = print,
          on_validation: ValidationHook | None = None) -> TrainResult:
    """Fine-tune one run as the recipe says and write its folder; ``dry_run`` stops after the preflight.

    ``on_validation`` is passed to the training loop (see ``ValidationHook``): a sweep prunes through it.
    """
    recipe = as_recipe(recipe, overrides)
    if recipe.stages is not None or recipe.tasks is not None:
        raise ConfigError("this recipe is made of runs (stages or tasks): tuneforge.api.train "
                          "(tuneforge.run.composed.train) runs it")
    assert recipe.task is not None and recipe.data is not None
    run = RunDir(recipe.output)
    given_yaml = recipe_to_yaml(recipe)
    if not dry_run:
        prepare_output(run, resume=resume, overwrite=overwrite, recipe_yaml=given_yaml)
    resolved = resolve_model(recipe.model, allow_hub=recipe.allow_hub)
    tokenizer = load_tokenizer(resolved.path)
    task = build_task(recipe, tokenizer, resolved.kind)
    problems: list[str] = []
    splits = parse_splits(read_splits(recipe, task, problems), task, fit=True, problems=problems)
    choices = saved_choices(run) if resume else None
    if choices is None:
        choices = default_choices(recipe, task, resolved.kind, model_params(resolved), splits)
    given = recipe
    if choices:
        recipe = with_choices(given, choices)
        task.configure(TaskSettings.from_recipe(recipe))  # the choices reach the task's settings too
    check_early_stopping_metric(recipe, task)
    for name in recipe.eval.baselines:  # a typo fails now, not after training
        BASELINES.get(name)
    slice_fields(splits.records["test"], recipe.eval.slice_by, "the test split")  # fails early on a typo
    train_enc = training_set(recipe, task, splits.examples["train"], echo, open_teacher=load_run)
    check = ForgettingCheck(recipe, task) if recipe.forgetting is not None else None
    if check is not None:
        train_enc = train_enc + check.rehearsal(len(train_enc))
    device, warnings = resolve_device(recipe.train)
    precision, more = resolve_precision(recipe.train, device)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and accelerator.distributed_type.value != "FSDP":
        echo("WARNING: FSDP was asked for, but accelerate runs these processes as "
             f"{accelerator.distributed_type.value} "
             "(it shards with FSDP on GPUs only); see docs/scale.md")
    model, method = model_for(recipe, task, resolved, accelerator.device)
    steps = total_steps(len(train_enc), recipe.train)
    pre = run_preflight(model=model, task=task, train=train_enc, n_val=len(splits.examples["validation"]),
                        n_test=len(splits.examples["test"]), cfg=recipe.train, device=device, precision=precision,
                        steps=steps, warnings=warnings + more, autocast=accelerator.autocast,
                        sources=split_sources(recipe))
    budget = within_budget(recipe, choices, pre) if choices and not resume else None
    if budget is not None:
        choices = [*(fewer_validations(c, int(budget.value)) for c in choices), budget]
        recipe = with_choices(given, choices)
        task.configure(TaskSettings.from_recipe(recipe))
        pre.estimated_train_seconds = (pre.estimated_train_seconds or 0.0) * budget.value / max(pre.steps, 1)
        pre.steps = int(budget.value)
    recipe_yaml = recipe_to_yaml(recipe)
    echo("\n".join(["preflight", *("  " + line for line in pre.lines())]))
    if choices:
        echo("\n".join(["chosen for you (give a key in the recipe to decide it yourself)",
                        *("  " + c.line() for c in choices)]))
    if dry_run:
        echo("resolved recipe:\n" + recipe_yaml)
        return TrainResult(run.root, None, pre)

    if resume and (run.data / "fingerprints.json").is_file():
        check_same_data(run, splits.fingerprints(recipe))
    accelerator.wait_for_everyone()  # under accelerate launch: every process has checked the folder first
    main = accelerator.is_main_process  # only the main process writes the run folder
    if main:
        write_run_start(run, recipe_yaml, splits, recipe, task, device, precision, pre, resume)
        write_json_atomic(run.root / CHOICES, {"given_recipe": given_yaml, "choices": [c.as_dict() for c in choices]})
    try:
        report = train_and_report(run, recipe, task, splits, train_enc, model, method, accelerator, resume, echo,
                                   check, on_validation, choices)
    except KeyboardInterrupt:
        if main:
            run.set_status("interrupted", resume_with="tuneforge train RECIPE --resume")
        raise
    except Exception as err:
        if main:
            run.set_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    return TrainResult(run.root, report, pre)


def train_and_report(run: RunDir, recipe: Recipe, task: Task, splits: Splits, train_enc: list[Encoded],
                      model: nn.Module, method: Method[Any], accelerator: Accelerator, resume: bool,
                      echo: Any, check: ForgettingCheck | None,
                      on_validation: ValidationHook | None = None,
                      choices: list[Choice] | None = None) -> dict[str, Any] | None:
    test = splits.examples["test"]
    phases: dict[str, float] = {}
    started = time.perf_counter()
    base = base_scores(run, recipe, task, model, test, echo) if accelerator.is_main_process else None
    phases["base_scoring_s"] = time.perf_counter() - started
    imprinted = start_head(recipe, task, model, splits.examples["train"], resume, echo)
    hooks = check.hooks(run, echo, main=accelerator.is_main_process) if check is not None else []
    validate = validator(task, recipe, splits) if splits.examples["validation"] else None
    metric = recipe.train.early_stopping.metric if recipe.train.early_stopping else "loss"
    lower = metric == "loss" or metric in task.lower_is_better
    steps = total_steps(len(train_enc), recipe.train)
    privacy = recipe.train.privacy
    batch = recipe.train.batch_size * recipe.train.grad_accum
    dp = DPSGD.planned(privacy, len(train_enc), batch, steps) if privacy else None
    hooks += [dp] if dp is not None else []
    hooks += [OnValidation(on_validation)] if on_validation is not None else []
    tracking = TrackingHook.planned(recipe, run.root) if accelerator.is_main_process else None
    hooks += [tracking] if tracking is not None else []
    started = time.perf_counter()
    state = fit(model, train_enc, recipe.train, hooks, task=task, method=method, run=run, accelerator=accelerator,
                resume=resume, validate=validate, lower_is_better=lower)
    phases["training_s"] = time.perf_counter() - started
    if not accelerator.is_main_process:
        return None  # the main process saves and scores the model
    model = accelerator.unwrap_model(model)
    save_model(run, method, model, task.tokenizer, task)
    echo(f"scoring the tuned model on {len(test)} test items")
    started = time.perf_counter()
    tuned = score(task, model, test) if test else None
    phases["tuned_scoring_s"] = time.perf_counter() - started
    training = state.summary()
    extra: dict[str, Any] = {"adapter_bytes": folder_bytes(run.model), "phases": phases}
    if choices:
        extra["choices"] = [c.as_dict() for c in choices]
    if imprinted is not None:
        extra["head_init"] = imprinted
    if tuned is not None and recipe.eval.baselines and task.predicts_labels:
        started = time.perf_counter()
        extra["baselines"] = cheap_baselines(run, recipe, task, splits, tuned, echo)
        phases["baselines_s"] = time.perf_counter() - started
    if dp is not None:
        extra["privacy"] = dp.spent(state.step)
    forgetting = [h.result for h in hooks if isinstance(h, ForgettingHook) and h.result is not None]
    if forgetting:
        extra["forgetting"] = forgetting[0]
    report = finish(run, recipe, task, test, base, tuned, count_parameters(model), training, extra)
    if tracking is not None:
        tracking.finish(report)
    echo(render_table(headline_table(report)) if report else "no test split: nothing to report")
    if report and report.get("baselines"):
        echo(render_table(baseline_table(report)))
        echo(report["baselines"]["verdict"])
    echo(f"run folder: {run.root}")
    return report


# ----------------------------------------------------------------------------- defaults and baselines
#: the run folder's record of what tuneforge chose and the recipe as the user gave it (a resume reuses both)
CHOICES = "choices.json"


def default_choices(recipe: Recipe, task: Task, kind: str, params: int, splits: Splits) -> list[Choice]:
    """What :mod:`tuneforge.run.defaults` chooses for a recipe that leaves out ``method`` or ``train``.

    A recipe that gives both is the user's own setup and gets nothing; otherwise every key the recipe gives
    (in the file or by ``--set``) wins and the rest is chosen from the data's and the model's shape.
    """
    given_method = "method" in recipe.model_fields_set
    if given_method and "train" in recipe.model_fields_set:
        return []
    train = splits.examples["train"]
    labels = [str(e.target) for e in train] if task.predicts_labels else None
    lengths = [len(task.tokenizer(e.text)["input_ids"]) for e in train[:2_000]]
    shape = data_shape(len(train), len(splits.examples["validation"]), lengths, labels)
    model = ModelShape(kind=kind, params=params,
                       new_head=kind == "encoder" and task.predicts_labels and isinstance(task, InitialisesHead))
    given = {f"train.{k}" for k in recipe.train.model_fields_set}
    return choose(shape, model, given, recipe.method.name if given_method else None)


def with_choices(recipe: Recipe, choices: list[Choice]) -> Recipe:
    """The recipe with the choices merged under the keys it gives (which always win)."""
    raw = recipe.model_dump(mode="json", exclude_unset=True)
    merged = _merge_under(as_overrides(choices), raw)
    return recipe_from_dict(merged, check_files=False)


def _merge_under(chosen: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(chosen)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "method":
            out[key] = _merge_under(out[key], value)
        else:
            out[key] = value
    return out


def within_budget(recipe: Recipe, choices: list[Choice], pre: Preflight) -> Choice | None:
    """Cap the chosen steps to ``train.time_budget`` from the preflight's measured time per step."""
    if not any(c.key == "train.epochs" for c in choices) or not pre.steps or not pre.estimated_train_seconds:
        return None
    return budget_choice(pre.steps, pre.estimated_train_seconds / pre.steps, recipe.train.time_budget)


def fewer_validations(choice: Choice, steps: int) -> Choice:
    """A chosen ``eval_every`` re-spaced for the steps the budget leaves (still about ten validations)."""
    if choice.key != "train.eval_every":
        return choice
    return Choice(choice.key, max(10, steps // 10), choice.reason)


def saved_choices(run: RunDir) -> list[Choice] | None:
    """The choices a run being resumed made when it started (its throughput is not measured again)."""
    path = run.root / CHOICES
    if not path.is_file():
        return None
    return [Choice(**c) for c in json.loads(path.read_text(encoding="utf-8"))["choices"]]


def start_head(recipe: Recipe, task: Task, model: nn.Module, train: list[Example], resume: bool,
               echo: Any) -> dict[str, Any] | None:
    """Imprint a new label head from class means (``train.head_init: class_mean``), after the base was scored."""
    if recipe.train.head_init != "class_mean" or resume:
        return None
    if not isinstance(task, InitialisesHead) or task.model_kind != "encoder":
        raise ConfigError(f"train.head_init: class_mean needs an encoder with a label head; {task.name} on a "
                          f"{task.model_kind} has none (set train.head_init: random)")
    started = time.perf_counter()
    done = task.init_head(model, train)
    done["seconds"] = time.perf_counter() - started
    echo(f"head started from class means (temperature {done['temperature']:g}, "
         f"training accuracy {done['train_accuracy']:.3f})")
    return done


def cheap_baselines(run: RunDir, recipe: Recipe, task: Task, splits: Splits, tuned: dict[str, Any],
                    echo: Any) -> dict[str, Any]:
    """Score ``eval.baselines`` on the same test items and compare each with the fine-tune, paired."""
    test = splits.examples["test"]
    resolved = resolve_model(recipe.model, allow_hub=recipe.allow_hub)
    own = str(resolved.path) if resolved.kind == "encoder" else None  # kNN over the base model's own embeddings
    ctx = BaselineContext(run_dir=run.root, recipe=recipe, task=task, train=splits.examples["train"], test=test,
                          encoder_path=own)
    systems, skipped = {}, {}
    for name in recipe.eval.baselines:
        echo(f"scoring the {name} baseline on {len(test)} test items")
        started = time.perf_counter()
        try:
            system = BASELINES.get(name)(ctx)
        except ValueError as err:  # e.g. one class in train: a baseline that cannot fit must not lose the run
            skipped[name] = str(err)
            echo(f"WARNING: the {name} baseline was skipped: {err}")
            continue
        systems[name] = (system, time.perf_counter() - started)
    out = baseline_comparison(task, test, tuned, systems)
    return {**out, "skipped": skipped} if skipped else out


def check_early_stopping_metric(recipe: Recipe, task: Task) -> None:
    stopping = recipe.train.early_stopping
    allowed = ("loss", *task.validation_metrics)
    if stopping is not None and stopping.metric not in allowed:
        raise ConfigError(f"train.early_stopping.metric: {stopping.metric!r} is not a {task.name} metric; "
                          f"use one of {', '.join(allowed)}")


def check_same_data(run: RunDir, fingerprints: dict[str, Any]) -> None:
    saved = json.loads((run.data / "fingerprints.json").read_text(encoding="utf-8"))
    changed = [k for k, v in fingerprints["splits"].items() if saved["splits"].get(k) != v]
    if changed:
        raise UserError(f"cannot resume {run.root}: the {', '.join(changed)} data changed since the run started "
                        "(see data/fingerprints.json); restore the files or start again with --overwrite")


def write_run_start(run: RunDir, recipe_yaml: str, splits: Splits, recipe: Recipe, task: Task, device: str,
                     precision: str, pre: Preflight, resume: bool) -> None:
    if not resume and run.exists():  # --overwrite: the old run goes only now that the new one is valid
        remove_owned(run.root, "run")
    run.root.mkdir(parents=True, exist_ok=True)
    mark_owned(run.root, "run")  # first, so that even a run that dies at once is recognised as ours
    run.set_status("running")
    write_text_atomic(run.recipe, recipe_yaml)
    write_json_atomic(run.environment, environment(device, precision))
    save_splits(splits, run.data)
    write_json_atomic(run.data / "fingerprints.json", splits.fingerprints(recipe))
    write_json_atomic(run.data / "schema.json", task.schema)
    write_json_atomic(run.root / "preflight.json", pre.__dict__)


def base_scores(run: RunDir, recipe: Recipe, task: Task, model: nn.Module, test: list[Example],
                 echo: Any) -> dict[str, Any] | None:
    """Score the untouched model once; a resumed run reuses the saved result."""
    if not recipe.eval.base or not test:
        return None
    saved = run.predictions / "base.json"
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    echo(f"scoring the base model on {len(test)} test items")
    base = score(task, model, test)
    write_json_atomic(saved, base)
    return base


def validator(task: Task, recipe: Recipe, splits: Splits) -> Any:
    val = splits.examples["validation"]
    val_enc = [e for e in encode_cached(task, val)[0] if e.n_answer > 0]
    metric = recipe.train.early_stopping.metric if recipe.train.early_stopping else "loss"

    def validate(model: nn.Module) -> dict[str, float]:
        out = {"loss": mean_loss(model, task, val_enc, recipe.eval.batch_size)}
        if metric != "loss":
            out[metric] = float(task.score(val, task.predict(model, val))[metric])
        return out

    return validate


def save_model(run: RunDir, method: Method[Any], model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                task: Task) -> None:
    tmp = run.root / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # inside the run folder: a leftover of an earlier failure
    try:
        run.save_trainable(tmp, method.trainable_state(model))
        tokenizer.save_pretrained(tmp)
        method.save_extra(model, tmp)
        shutil.rmtree(run.model, ignore_errors=True)
        tmp.rename(run.model)
    except BaseException:  # a full disk or an interrupt leaves no temporary folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_bytes(folder: Path) -> int:
    """Size on disk of what the run saved beside the base model (adapter or trained tensors)."""
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors"))


def finish(run: RunDir, recipe: Recipe, task: Task, test: list[Example], base: dict[str, Any] | None,
            tuned: dict[str, Any] | None, params: dict[str, int], training: dict[str, Any] | None,
            extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
    report = None
    if tuned is not None:
        write_jsonl_atomic(run.predictions / "tuned.jsonl", tuned["predictions"])
        if base is not None:
            write_jsonl_atomic(run.predictions / "base.jsonl", base["predictions"])
        meta = {"task": task.name, "model": recipe.model, "method": recipe.method.name, "parameters": params,
                **(extra or {})}
        if training is not None:
            meta["training"] = training
        report = build_report(task, test, base, tuned, meta=meta, samples=recipe.eval.samples,
                              metrics=recipe.eval.metrics)
        add_analysis(report, run, task, test, tuned["predictions"])  # error analysis and figure data
        write_text_atomic(run.report_md, render_markdown(report))
        write_text_atomic(run.root / "report.html", render_html(report))
        write_json_atomic(run.report_json, report)
    run.set_status("complete")
    document_and_register(run)
    return report


def document_and_register(run: RunDir) -> None:
    """MODEL_CARD.md in the run folder, and the run in the local catalogue (``tuneforge runs``)."""
    write_model_card(run.root)
    register_finished_run(run.root)


def evaluate(run_dir: Path | str, *, echo: Any = print) -> dict[str, Any]:
    """Re-score base and tuned models on the run's saved test split and rewrite the report."""
    run, recipe = open_run(run_dir)
    tuned_run = load_run(run_dir)
    task = tuned_run.task
    test = load_split(run_dir, task, "test")
    if not test:
        raise UserError(f"{run.root} has no test split to evaluate")
    tuned = score(task, tuned_run.model, test)
    cases = recipe.eval.golden
    golden_tuned = run_cases(task, tuned_run.model, cases) if cases else None
    params = count_parameters(tuned_run.model)
    del tuned_run
    base, golden_base = None, None
    if recipe.eval.base:
        base_run = load_run(run_dir, tuned=False)
        base = score(base_run.task, base_run.model, test)
        golden_base = run_cases(base_run.task, base_run.model, cases) if cases else None
    previous = json.loads(run.report_json.read_text(encoding="utf-8")) if run.report_json.is_file() else {}
    kept = {k: previous[k] for k in ("adapter_bytes", "privacy", "forgetting", "choices", "head_init", "baselines",
                                     "phases") if k in previous}
    if golden_tuned is not None:
        kept["golden"] = gate(golden_tuned, golden_base)
    report = finish(run, recipe, task, test, base, tuned, params, previous.get("training"), kept)
    assert report is not None
    echo(render_table(headline_table(report)))
    if "golden" in report:
        g = report["golden"]
        echo(f"golden cases: {g['n_passed']}/{g['n_cases']} pass on the tuned model"
             + (f"; fixed by the tune: {g['fixed']}, broken: {g['broken']}" if "fixed" in g else ""))
    return report


def predict(run_dir: Path | str, input_path: Path | str, output_path: Path | str | None = None,
            *, base: bool = False) -> Path:
    """Batch inference: one output row per input row, with the input fields kept beside the prediction."""
    out = Path(output_path) if output_path else Path(input_path).with_suffix(".predictions.jsonl")
    if out.is_dir():  # checked before any model is loaded
        raise UserError(f"the output {out} is a folder; give a file path for the predictions, "
                        f"such as {out / 'predictions.jsonl'}")
    records = read_records(Path(input_path))
    loaded = load_run(run_dir, tuned=not base)
    task = loaded.task
    examples = task.parse_for_prediction(records, str(input_path))
    predictions = task.predict(loaded.model, examples)
    write_jsonl_atomic(out, ({**r.fields, "prediction": p["prediction"],
                              **({"confidence": p["confidence"]} if "confidence" in p else {})}
                             for r, p in zip(records, predictions)))
    return out
