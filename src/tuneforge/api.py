"""The Python API. The CLI only wraps these functions.

``train`` runs a recipe end to end: data -> preflight -> base evaluation -> the one training
loop -> tuned evaluation -> report, in one run folder. ``evaluate``, ``predict`` and ``export``
reopen a finished run folder.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase, set_seed

from tuneforge.accel.allocator import loaded_allocator
from tuneforge.tasks.encode_cache import encode_cached
from tuneforge.data.readers import read_records
from tuneforge.run.splits import Splits, load_saved_split, parse_splits, read_splits, save_splits, split_sources
from tuneforge.errors import ConfigError, UserError
from tuneforge.evaluate.golden import gate, run_cases
from tuneforge.evaluate.report import build_report, headline_table, model_scores, render_markdown, render_table
from tuneforge.evaluate.report_page import add_analysis, render_html, slice_fields
from tuneforge.methods import count_parameters, get_method
from tuneforge.methods.base import Method
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import MODELS, ModelSpec, ResolvedModel, resolve_model
from tuneforge.recipe import Recipe, load_recipe, load_yaml, read_utf8, recipe_from_dict, recipe_to_yaml
from tuneforge.run.folder import RunDir, claim_output, mark_owned, remove_owned
from tuneforge.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from tuneforge.tasks.base import Encoded, Example, Task, get_task, mean_loss
from tuneforge.models.surgery import keep_layers, set_dropout
from tuneforge.train.guards import ForgettingCheck, training_set
from tuneforge.train.loop import ValidationHook, fit, total_steps
from tuneforge.train.forgetting import ForgettingHook
from tuneforge.train.hooks import OnValidation
from tuneforge.run.tracking import TrackingHook
from tuneforge.train.privacy import DPSGD
from tuneforge.train.preflight import Preflight, resolve_device, resolve_precision, run_preflight

RecipeLike = Recipe | str | Path | dict


@dataclass
class Loaded:
    """A model ready to predict: the recipe, its task (schema fitted), the model and its method."""

    recipe: Recipe
    task: Task
    model: nn.Module
    method: Method[Any]
    resolved: ResolvedModel


def as_recipe(recipe: RecipeLike, overrides: list[str] | None = None) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return recipe_from_dict(recipe)
    return load_recipe(recipe, overrides)


def list_models() -> list[ModelSpec]:
    return [MODELS.get(n) for n in MODELS.names()]


# ----------------------------------------------------------------------------- building blocks
def _model_for(recipe: Recipe, task: Task, resolved: ResolvedModel, device: str) -> tuple[nn.Module, Method[Any]]:
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


def _score(task: Task, model: nn.Module, examples: list[Example]) -> dict[str, Any]:
    predictions = task.predict(model, examples)
    extra = task.extra_eval(model, examples)
    return {"scores": model_scores(task, examples, predictions, extra),
            "items": task.item_scores(examples, predictions), "predictions": predictions}


def _environment(device: str, precision: str) -> dict[str, Any]:
    import accelerate
    import peft
    import transformers

    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "accelerate": accelerate.__version__,
            "device": device, "mixed_precision": precision, "cpu_threads": torch.get_num_threads(),
            "allocator": loaded_allocator(),
            "processes": accelerate.PartialState().num_processes}


def _prepare_output(run: RunDir, *, resume: bool, overwrite: bool, recipe_yaml: str) -> None:
    """Refuse an output folder that is not ours before any work; ``claim_output`` says why."""
    claim = claim_output(run.root, kind="run", overwrite=overwrite, resume=resume)
    if claim in ("new", "replace"):
        return  # a replaced run is deleted in _write_run_start, once the recipe and data have passed every check
    if run.is_complete():
        raise UserError(f"{run.root} already holds a finished run; pick another `output`, or pass --overwrite")
    if claim == "exists":
        raise UserError(f"{run.root} holds an unfinished run; pass --resume to continue it or --overwrite to start again")
    if run.recipe.is_file() and run.recipe.read_text(encoding="utf-8") != recipe_yaml:
        raise UserError(f"cannot resume {run.root}: the recipe differs from the one it was started with "
                        f"({run.recipe}); use the same recipe, or --overwrite")


# ----------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    run_dir: Path
    report: dict[str, Any] | None
    preflight: Preflight


def train(recipe: RecipeLike, *, resume: bool = False, dry_run: bool = False, overwrite: bool = False,
          overrides: list[str] | None = None, echo: Any = print,
          on_validation: ValidationHook | None = None) -> TrainResult:
    """Fine-tune as the recipe says and write the run folder; ``dry_run`` stops after the preflight.

    ``on_validation`` is passed to the training loop (see ``ValidationHook``): a sweep prunes through it.
    """
    recipe = as_recipe(recipe, overrides)
    if recipe.stages is not None or recipe.tasks is not None:
        return _train_composed(recipe, resume=resume, dry_run=dry_run, overwrite=overwrite, echo=echo)
    assert recipe.task is not None and recipe.data is not None
    run = RunDir(recipe.output)
    recipe_yaml = recipe_to_yaml(recipe)
    if not dry_run:
        _prepare_output(run, resume=resume, overwrite=overwrite, recipe_yaml=recipe_yaml)
    resolved = resolve_model(recipe.model, allow_hub=recipe.allow_hub)
    tokenizer = load_tokenizer(resolved.path)
    task = get_task(recipe, tokenizer, resolved.kind)
    problems: list[str] = []
    splits = parse_splits(read_splits(recipe, task, problems), task, fit=True, problems=problems)
    _check_early_stopping_metric(recipe, task)
    slice_fields(splits.records["test"], recipe.eval.slice_by, "the test split")  # fails early on a typo
    train_enc = training_set(recipe, task, splits.examples["train"], echo)
    check = ForgettingCheck(recipe, task) if recipe.forgetting is not None else None
    if check is not None:
        train_enc = train_enc + check.rehearsal(len(train_enc))
    device, warnings = resolve_device(recipe.train)
    precision, more = resolve_precision(recipe.train, device)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and accelerator.distributed_type.value != "FSDP":
        echo(f"WARNING: FSDP was asked for, but accelerate runs these processes as {accelerator.distributed_type.value} "
             "(it shards with FSDP on GPUs only); see docs/scale.md")
    model, method = _model_for(recipe, task, resolved, accelerator.device)
    steps = total_steps(len(train_enc), recipe.train)
    pre = run_preflight(model=model, task=task, train=train_enc, n_val=len(splits.examples["validation"]),
                        n_test=len(splits.examples["test"]), cfg=recipe.train, device=device, precision=precision,
                        steps=steps, warnings=warnings + more, autocast=accelerator.autocast,
                        sources=split_sources(recipe))
    echo("\n".join(["preflight", *("  " + line for line in pre.lines())]))
    if dry_run:
        echo("resolved recipe:\n" + recipe_yaml)
        return TrainResult(run.root, None, pre)

    if resume and (run.data / "fingerprints.json").is_file():
        _check_same_data(run, splits.fingerprints(recipe))
    accelerator.wait_for_everyone()  # under accelerate launch: every process has checked the folder first
    main = accelerator.is_main_process  # only the main process writes the run folder
    if main:
        _write_run_start(run, recipe_yaml, splits, recipe, task, device, precision, pre, resume)
    try:
        report = _train_and_report(run, recipe, task, splits, train_enc, model, method, accelerator, resume, echo,
                                   check, on_validation)
    except KeyboardInterrupt:
        if main:
            run.set_status("interrupted", resume_with="tuneforge train RECIPE --resume")
        raise
    except Exception as err:
        if main:
            run.set_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    return TrainResult(run.root, report, pre)


def _train_composed(recipe: Recipe, *, resume: bool, dry_run: bool, overwrite: bool, echo: Any) -> TrainResult:
    """Staged chains and multi-task mixtures (``tuneforge.run.stages``); a dry run checks every part."""
    from tuneforge.run.stages import run_multitask, run_stages

    if dry_run:
        from tuneforge.recipe import composed_recipe

        raw = recipe.model_dump(mode="json")
        parts = [composed_recipe(raw, i) for i in range(len(recipe.stages or recipe.tasks or []))]
        last = None
        for part in parts:
            echo(f"== {part.output}")
            last = train(part, dry_run=True, echo=echo)
        assert last is not None
        return TrainResult(Path(recipe.output), None, last.preflight)
    runner = run_stages if recipe.stages is not None else run_multitask
    runner(recipe, resume=resume, overwrite=overwrite, echo=echo)
    report = json.loads(RunDir(recipe.output).report_json.read_text(encoding="utf-8"))
    return TrainResult(Path(recipe.output), report, None)  # type: ignore[arg-type]


def _train_and_report(run: RunDir, recipe: Recipe, task: Task, splits: Splits, train_enc: list[Encoded],
                      model: nn.Module, method: Method[Any], accelerator: Accelerator, resume: bool,
                      echo: Any, check: ForgettingCheck | None,
                      on_validation: ValidationHook | None = None) -> dict[str, Any] | None:
    test = splits.examples["test"]
    base = _base_scores(run, recipe, task, model, test, echo) if accelerator.is_main_process else None
    hooks = check.hooks(run, echo, main=accelerator.is_main_process) if check is not None else []
    validate = _validator(task, recipe, splits) if splits.examples["validation"] else None
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
    state = fit(model, train_enc, recipe.train, hooks, task=task, method=method, run=run, accelerator=accelerator,
                resume=resume, validate=validate, lower_is_better=lower)
    if not accelerator.is_main_process:
        return None  # the main process saves and scores the model
    model = accelerator.unwrap_model(model)
    _save_model(run, method, model, task.tokenizer, task)
    echo(f"scoring the tuned model on {len(test)} test items")
    tuned = _score(task, model, test) if test else None
    training = state.summary()
    extra: dict[str, Any] = {"adapter_bytes": _folder_bytes(run.model)}
    if dp is not None:
        extra["privacy"] = dp.spent(state.step)
    forgetting = [h.result for h in hooks if isinstance(h, ForgettingHook) and h.result is not None]
    if forgetting:
        extra["forgetting"] = forgetting[0]
    report = _finish(run, recipe, task, test, base, tuned, count_parameters(model), training, extra)
    if tracking is not None:
        tracking.finish(report)
    echo(render_table(headline_table(report)) if report else "no test split: nothing to report")
    echo(f"run folder: {run.root}")
    return report


def _check_early_stopping_metric(recipe: Recipe, task: Task) -> None:
    stopping = recipe.train.early_stopping
    allowed = ("loss", *task.validation_metrics)
    if stopping is not None and stopping.metric not in allowed:
        raise ConfigError(f"train.early_stopping.metric: {stopping.metric!r} is not a {task.name} metric; "
                          f"use one of {', '.join(allowed)}")


def _check_same_data(run: RunDir, fingerprints: dict[str, Any]) -> None:
    saved = json.loads((run.data / "fingerprints.json").read_text(encoding="utf-8"))
    changed = [k for k, v in fingerprints["splits"].items() if saved["splits"].get(k) != v]
    if changed:
        raise UserError(f"cannot resume {run.root}: the {', '.join(changed)} data changed since the run started "
                        "(see data/fingerprints.json); restore the files or start again with --overwrite")


def _write_run_start(run: RunDir, recipe_yaml: str, splits: Splits, recipe: Recipe, task: Task, device: str,
                     precision: str, pre: Preflight, resume: bool) -> None:
    if not resume and run.exists():  # --overwrite: the old run goes only now that the new one is valid
        remove_owned(run.root, "run")
    run.root.mkdir(parents=True, exist_ok=True)
    mark_owned(run.root, "run")  # first, so that even a run that dies at once is recognised as ours
    run.set_status("running")
    write_text_atomic(run.recipe, recipe_yaml)
    write_json_atomic(run.environment, _environment(device, precision))
    save_splits(splits, run.data)
    write_json_atomic(run.data / "fingerprints.json", splits.fingerprints(recipe))
    write_json_atomic(run.data / "schema.json", task.schema)
    write_json_atomic(run.root / "preflight.json", pre.__dict__)


def _base_scores(run: RunDir, recipe: Recipe, task: Task, model: nn.Module, test: list[Example],
                 echo: Any) -> dict[str, Any] | None:
    """Score the untouched model once; a resumed run reuses the saved result."""
    if not recipe.eval.base or not test:
        return None
    saved = run.predictions / "base.json"
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    echo(f"scoring the base model on {len(test)} test items")
    base = _score(task, model, test)
    write_json_atomic(saved, base)
    return base


def _validator(task: Task, recipe: Recipe, splits: Splits) -> Any:
    val = splits.examples["validation"]
    val_enc = [e for e in encode_cached(task, val)[0] if e.n_answer > 0]
    metric = recipe.train.early_stopping.metric if recipe.train.early_stopping else "loss"

    def validate(model: nn.Module) -> dict[str, float]:
        out = {"loss": mean_loss(model, task, val_enc, recipe.eval.batch_size)}
        if metric != "loss":
            out[metric] = float(task.score(val, task.predict(model, val))[metric])
        return out

    return validate


def _save_model(run: RunDir, method: Method[Any], model: nn.Module, tokenizer: PreTrainedTokenizerBase,
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


def _folder_bytes(folder: Path) -> int:
    """Size on disk of what the run saved beside the base model (adapter or trained tensors)."""
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors"))


def _finish(run: RunDir, recipe: Recipe, task: Task, test: list[Example], base: dict[str, Any] | None,
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
    _document_and_register(run)
    return report


def _document_and_register(run: RunDir) -> None:
    """MODEL_CARD.md in the run folder, and the run in the local catalogue (``tuneforge runs``)."""
    from tuneforge.run.model_card import write_model_card
    from tuneforge.run.catalogue import register_finished_run

    write_model_card(run.root)
    register_finished_run(run.root)


# ----------------------------------------------------------------------------- reopen a run
def _open_run(run_dir: Path | str) -> tuple[RunDir, Recipe]:
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
        raise _damaged(run, str(err)) from None
    _check_weights(run, run.model / "trainable.safetensors")
    return run, recipe


def _damaged(run: RunDir, problem: str) -> UserError:
    """The error for a run folder whose own files no longer read (edited, truncated, partly deleted)."""
    return UserError(f"the run folder {run.root} is damaged: {problem}; restore the file from a backup, "
                     "or train the run again")


def _check_weights(run: RunDir, path: Path) -> None:
    """Open a safetensors file's header (cheap: nothing is read into memory) so that a truncated or
    overwritten file is named here rather than failing deep inside the model loading."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
        raise _damaged(run, f"{path} cannot be read as safetensors ({err})") from None


def load_task(run_dir: Path | str) -> tuple[Recipe, Task, ResolvedModel]:
    """The run's recipe and task (schema as trained), without loading any model weights."""
    run, recipe = _open_run(run_dir)
    resolved = resolve_model(recipe.model, allow_hub=recipe.allow_hub)
    task = get_task(recipe, load_tokenizer(run.model), resolved.kind)
    schema_path = run.data / "schema.json"
    try:
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # missing, unreadable, not UTF-8 or not JSON
        raise _damaged(run, f"{schema_path} cannot be read ({err})") from None
    if not isinstance(schema, dict):
        raise _damaged(run, f"{schema_path} holds a JSON {type(schema).__name__}, not an object")
    task.schema = schema
    return recipe, task, resolved


def load_split(run_dir: Path | str, task: Task, name: str) -> list[Example]:
    """One of the run's saved splits (train, validation, test), parsed by its task."""
    run = RunDir(run_dir)
    path = run.data / f"{name}.jsonl"
    try:
        records = load_saved_split(run.data, name)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        raise _damaged(run, f"{path} cannot be read ({type(err).__name__}: {err})") from None
    return task.parse(records, f"the {name} data")


def load_run(run_dir: Path | str, *, device: str = "cpu", tuned: bool = True) -> Loaded:
    """The run's task and model; ``tuned=False`` gives the untouched base model instead."""
    run = RunDir(run_dir)
    recipe, task, resolved = load_task(run_dir)
    if tuned and (run.root / "compression.json").is_file():  # written by `tuneforge compress`
        from tuneforge.compress.store import load_compressed

        return load_compressed(run, recipe, task, resolved)
    model, method = _model_for(recipe, task, resolved, device)
    if tuned:
        method.load_trainable(model, run.load_trainable(run.model))
    model.eval()
    return Loaded(recipe, task, model, method, resolved)


def evaluate(run_dir: Path | str, *, echo: Any = print) -> dict[str, Any]:
    """Re-score base and tuned models on the run's saved test split and rewrite the report."""
    run, recipe = _open_run(run_dir)
    tuned_run = load_run(run_dir)
    task = tuned_run.task
    test = load_split(run_dir, task, "test")
    if not test:
        raise UserError(f"{run.root} has no test split to evaluate")
    tuned = _score(task, tuned_run.model, test)
    cases = recipe.eval.golden
    golden_tuned = run_cases(task, tuned_run.model, cases) if cases else None
    params = count_parameters(tuned_run.model)
    del tuned_run
    base, golden_base = None, None
    if recipe.eval.base:
        base_run = load_run(run_dir, tuned=False)
        base = _score(base_run.task, base_run.model, test)
        golden_base = run_cases(base_run.task, base_run.model, cases) if cases else None
    previous = json.loads(run.report_json.read_text(encoding="utf-8")) if run.report_json.is_file() else {}
    kept = {k: previous[k] for k in ("adapter_bytes", "privacy", "forgetting") if k in previous}
    if golden_tuned is not None:
        kept["golden"] = gate(golden_tuned, golden_base)
    report = _finish(run, recipe, task, test, base, tuned, params, previous.get("training"), kept)
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


def export(run_dir: Path | str, out_dir: Path | str | None = None, *, overwrite: bool = False,
           force: bool = False, format: str = "hf", **options: Any) -> Path:
    """A standalone model folder that needs no tuneforge to load, with the run's MODEL_CARD.md.

    ``format``: ``hf`` (safetensors, adapters merged), ``gguf`` (llama-architecture decoders) or
    ``onnx`` (classifiers); see :mod:`tuneforge.deploy.formats`. A model that fails the recipe's golden
    cases (``eval.golden``) is refused unless ``force``.
    """
    run, _ = _open_run(run_dir)
    out = Path(out_dir) if out_dir else run.root / "export"
    if claim_output(out, kind="export", overwrite=overwrite) == "exists":
        raise UserError(f"{out} already holds an export; pass --overwrite to replace it, or pick another folder")
    compression = run.root / "compression.json"
    if compression.is_file() and json.loads(compression.read_text(encoding="utf-8"))["quantised"]:
        raise UserError(f"{run.root} holds weights quantised in torch's own layout, which no export format stores; "
                        "export the uncompressed run (GGUF has its own --gguf-type q8_0), or use this folder itself "
                        "(`tuneforge predict` loads it)")
    if format != "hf":
        from tuneforge.deploy.formats import export_as

        try:
            return export_as(format, run_dir, out, **options)
        except UserError:
            raise  # a failed reproduction check keeps its attempt for inspection; its message names the folder
        except BaseException:  # the exporters build in ".NAME.tmp" beside the output; a crash leaves none behind
            shutil.rmtree(out.with_name(f".{out.name}.tmp"), ignore_errors=True)
            raise
    loaded = load_run(run_dir)
    if loaded.recipe.eval.golden and not force:
        failed = [r for r in run_cases(loaded.task, loaded.model, loaded.recipe.eval.golden) if not r["passed"]]
        if failed:
            lines = [f"{r['case']}: {'; '.join(r['failures'])} (answer: {r['answer'][:80]!r})" for r in failed]
            raise UserError(f"{run.root}: the tuned model fails {len(failed)} golden case(s) of eval.golden, so it "
                            "is not exported; fix the model or pass --force:\n  " + "\n  ".join(lines))
    merged = loaded.method.merge(loaded.model)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # tuneforge's own temporary name: a leftover of an earlier failure
    try:
        _write_export(run, loaded, merged, tmp)
        remove_owned(out, "export")  # checked again: only an earlier export (or nothing) is replaced
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_export(run: RunDir, loaded: Loaded, merged: nn.Module, tmp: Path) -> None:
    from tuneforge.run.model_card import write_model_card

    merged.save_pretrained(tmp, safe_serialization=True)
    loaded.task.tokenizer.save_pretrained(tmp)
    write_json_atomic(tmp / "tuneforge.json", {"task": loaded.task.name, "schema": loaded.task.schema,
                                                "base_model": loaded.recipe.model, "method": loaded.recipe.method.name})
    write_model_card(run.root, tmp / "MODEL_CARD.md")
