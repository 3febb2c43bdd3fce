"""Multi-task fine-tuning: one decoder, several tasks, one mixed training set, per-task reports.

Every task reads, validates and splits its own data and is scored on its own test split, exactly as a
single-task run would be; only the training set is shared, drawn from the tasks by the mixing weights.
All decoder tasks train the same way (next-token loss on the answer), so one loop and one loss serve the
mixture. The ``train`` section of the top level drives the loop.
"""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator

from tuneforge.errors import ConfigError
from tuneforge.methods import count_parameters
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import Recipe, composed_recipe, recipe_to_yaml
from tuneforge.run.folder import RunDir
from tuneforge.run.loading import build_task, load_run, model_for
from tuneforge.run.pipeline import base_scores, finish, save_model, score, write_run_start
from tuneforge.run.splits import Splits, parse_splits, read_splits
from tuneforge.run.stages import (
    finish_composed, headline_of, link_or_copy, mix, mixing_weights, raw_recipe, start_composed,
)
from tuneforge.tasks.base import Encoded, Task, mean_loss
from tuneforge.train.guards import training_set
from tuneforge.train.loop import fit, total_steps
from tuneforge.train.preflight import resolve_device, resolve_precision, run_preflight


def _load_tasks(subs: dict[str, Recipe], echo: Any) -> tuple[dict[str, Task], dict[str, Splits], dict[str, list[Encoded]], Any]:
    first = next(iter(subs.values()))
    resolved = resolve_model(first.model, allow_hub=first.allow_hub)
    tokenizer = load_tokenizer(resolved.path)
    tasks, splits, encoded = {}, {}, {}
    for name, sub in subs.items():
        task = build_task(sub, tokenizer, resolved.kind)
        if task.head != "causal_lm":
            raise ConfigError(f"tasks.{name}: a multi-task run trains one decoder on every task as text "
                              f"(T5-style); {sub.model} is an encoder")
        problems: list[str] = []
        splits[name] = parse_splits(read_splits(sub, task, problems), task, fit=True, problems=problems)
        tasks[name] = task
        encoded[name] = training_set(sub, task, splits[name].examples["train"], echo, open_teacher=load_run)
    return tasks, splits, encoded, resolved


def train_mixture(run: RunDir, recipe: Recipe, subs: dict[str, Recipe], explicit: dict[str, float | None], *,
                  resume: bool, echo: Any) -> list[dict[str, Any]]:
    """Train the shared model on the mixture, then score and report each task in its own run folder."""
    tasks, splits, encoded, resolved = _load_tasks(subs, echo)
    names = list(subs)
    first, lead = subs[names[0]], tasks[names[0]]
    weights = mixing_weights({k: len(v) for k, v in encoded.items()}, recipe.mixing.strategy,
                             recipe.mixing.temperature, explicit)
    train_enc = mix(encoded, weights, first.train.seed)
    echo("mixture: " + ", ".join(f"{k} {weights[k]:.1%} ({len(encoded[k])} rows)" for k in names))
    device, warnings = resolve_device(first.train)
    precision, more = resolve_precision(first.train, device)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)
    model, method = model_for(first, lead, resolved, accelerator.device)
    steps = total_steps(len(train_enc), first.train)
    n_val = sum(len(s.examples["validation"]) for s in splits.values())
    n_test = sum(len(s.examples["test"]) for s in splits.values())
    pre = run_preflight(model=model, task=lead, train=train_enc, n_val=n_val, n_test=n_test, cfg=first.train,
                        device=device, precision=precision, steps=steps, warnings=warnings + more,
                        autocast=accelerator.autocast)
    echo("\n".join(["preflight", *("  " + line for line in pre.lines())]))
    base = {}
    for name in names:
        sub_run = RunDir(subs[name].output)
        write_run_start(sub_run, recipe_to_yaml(subs[name]), splits[name], subs[name], tasks[name], device,
                        precision, pre, resume=resume and sub_run.exists())
        base[name] = base_scores(sub_run, subs[name], tasks[name], model, splits[name].examples["test"], echo)
    val_enc = [e for n in names for e in tasks[n].encode_many(splits[n].examples["validation"]) if e.n_answer > 0]
    validate = None
    if val_enc:
        validate = lambda m: {"loss": mean_loss(m, lead, val_enc, first.eval.batch_size)}  # noqa: E731
    state = fit(model=model, task=lead, method=method, train=train_enc, validate=validate, cfg=first.train, run=run,
                accelerator=accelerator, resume=resume)
    model = accelerator.unwrap_model(model)
    save_model(run, method, model, lead.tokenizer, lead)
    training = {**state.summary(), "mixing": weights}
    summary = []
    for name in names:
        sub_run = RunDir(subs[name].output)
        for f in run.model.rglob("*"):
            if f.is_file():
                link_or_copy(f, sub_run.model / f.relative_to(run.model))
        test = splits[name].examples["test"]
        echo(f"scoring the tuned model on {len(test)} {name} test items")
        tuned = score(tasks[name], model, test) if test else None
        report = finish(sub_run, subs[name], tasks[name], test, base[name], tuned, count_parameters(model),
                             training)
        summary.append({"name": name, "task": subs[name].task, "method": subs[name].method.name,
                        "weight": weights[name], "run": str(sub_run.root),
                        "headline": headline_of(report)})
    return summary


def run_multitask(recipe: Recipe, *, resume: bool, overwrite: bool, echo: Any = print) -> Any:
    """Train one model on all tasks, then score each on its own test split in ``tasks/<name>``."""
    raw = raw_recipe(recipe)
    run = RunDir(recipe.output)
    start_composed(run, recipe, resume=resume, overwrite=overwrite)
    subs = [composed_recipe(raw, i) for i in range(len(recipe.tasks or []))]
    if len({s.method.model_dump_json() for s in subs}) != 1:
        raise ConfigError("tasks: every task of a multi-task run trains the same model with the same method; "
                          "set method at the top level only")
    names = [e["name"] for e in recipe.tasks or []]
    explicit = {e["name"]: e.get("weight") for e in recipe.tasks or []}
    summary = train_mixture(run, recipe, dict(zip(names, subs)), explicit, resume=resume, echo=echo)
    finish_composed(run, "tasks", summary, echo)
    return summary
