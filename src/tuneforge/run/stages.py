"""Runs made of runs: staged chains and multi-task mixtures.

A staged recipe runs each stage as an ordinary run in ``stages/NN-name``; stage k+1 starts from stage
k's exported (merged) weights, so a stage may change the task, the data and even the method (continued
pre-training with full weights, then LoRA on the supervised task). This is also how transfer from a
related task is written. A finished stage is skipped when the chain is resumed.

A multi-task recipe trains one decoder on a mixture of tasks (T5-style text-to-text: every task's
answers are tokens, so one LM head serves all). Each task keeps its own splits and is scored on its own
test set; ``tasks/<name>`` is an ordinary run folder holding the shared weights, so ``eval``, ``predict``
and ``export`` work on it unchanged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from tuneforge.deploy.export import export
from tuneforge.errors import UserError
from tuneforge.files import write_json_atomic, write_text_atomic
from tuneforge.recipe import Recipe, composed_recipe, recipe_to_yaml
from tuneforge.run import pipeline
from tuneforge.run.folder import RunDir, claim_output, mark_owned, remove_owned
from tuneforge.tasks.base import Encoded


def raw_recipe(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")


# ----------------------------------------------------------------------------- stages
def run_stages(recipe: Recipe, *, resume: bool, overwrite: bool, echo: Any = print) -> Any:
    """Run every stage in order; the last stage's result is the chain's result."""
    raw = raw_recipe(recipe)
    run = RunDir(recipe.output)
    start_composed(run, recipe, resume=resume, overwrite=overwrite)
    model: str | None = None
    result = None
    summary = []
    for i, entry in enumerate(recipe.stages or []):
        stage = composed_recipe(raw, i, model=model)
        stage_run = RunDir(stage.output)
        echo(f"== stage {i + 1}/{len(recipe.stages or [])}: {entry['name']} ({stage.task}, {stage.method.name}) "
             f"from {stage.model}")
        if stage_run.is_complete():
            echo(f"stage {entry['name']} is already complete: skipped")
            report = json.loads(stage_run.report_json.read_text(encoding="utf-8")) if stage_run.report_json.is_file() else None
        else:
            result = pipeline.train(stage, resume=stage_run.exists(), echo=echo)
            report = result.report
        exported = stage_run.root / "export"
        if i + 1 < len(recipe.stages or []) and not (exported / "config.json").is_file():
            export(stage_run.root, exported, overwrite=True)
        model = str(exported)
        summary.append({"stage": entry["name"], "task": stage.task, "method": stage.method.name,
                        "run": str(stage_run.root), "headline": headline_of(report)})
    finish_composed(run, "stages", summary, echo)
    return result


def headline_of(report: dict[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {}
    return {m: {"base": report.get("base", {}).get(m), "tuned": report["tuned"].get(m),
                "delta_ci": report.get("intervals", {}).get(m, {}).get("delta")} for m in report["headline"]}


def start_composed(run: RunDir, recipe: Recipe, *, resume: bool, overwrite: bool) -> None:
    """Claim the chain's folder as ``pipeline.train`` claims a run's: only a tuneforge run is resumed or replaced."""
    text = recipe_to_yaml(recipe)
    claim = claim_output(run.root, kind="run", overwrite=overwrite, resume=resume)
    if claim == "exists":
        if run.is_complete():
            raise UserError(f"{run.root} already holds a finished run; pick another `output`, or pass --overwrite")
        raise UserError(f"{run.root} holds an unfinished run; pass --resume to continue it or --overwrite")
    if claim == "replace":
        remove_owned(run.root, "run")
    if claim == "resume" and run.recipe.is_file() and run.recipe.read_text(encoding="utf-8") != text:
        raise UserError(f"cannot resume {run.root}: the recipe differs from the one it was started with")
    run.root.mkdir(parents=True, exist_ok=True)
    mark_owned(run.root, "run")
    run.set_status("running")
    write_text_atomic(run.recipe, text)


def finish_composed(run: RunDir, kind: str, summary: list[dict[str, Any]], echo: Any) -> None:
    """The summary table of a run made of runs (report.json and report.md), and the folder marked complete."""
    lines = [f"# tuneforge {kind} run", "", "| " + ("stage" if kind == "stages" else "task") +
             " | task | method | metric | base | tuned | 95% CI of change |", "|---|---|---|---|---|---|---|"]
    for row in summary:
        for metric, v in row["headline"].items():
            ci = v["delta_ci"]
            fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
            lines.append(f"| {row.get('stage', row.get('name'))} | {row['task']} | {row['method']} | {metric} | "
                         f"{fmt(v['base'])} | {fmt(v['tuned'])} | {'-' if ci is None else f'[{ci[0]:+.4f}, {ci[1]:+.4f}]'} |")
    text = "\n".join(lines) + "\n"
    write_json_atomic(run.report_json, {kind: summary})
    write_text_atomic(run.report_md, text)
    run.set_status("complete")
    echo(text)


# ----------------------------------------------------------------------------- multi-task
def mixing_weights(sizes: dict[str, int], strategy: str, temperature: float,
                   explicit: dict[str, float | None]) -> dict[str, float]:
    """Sampling probability of each task: proportional to size, equal, or size^(1/T); explicit weights win."""
    if strategy == "proportional":
        raw = {k: float(n) for k, n in sizes.items()}
    elif strategy == "equal":
        raw = {k: 1.0 for k in sizes}
    else:
        raw = {k: n ** (1.0 / temperature) for k, n in sizes.items()}
    raw = {k: explicit[k] if explicit.get(k) is not None else v for k, v in raw.items()}  # type: ignore[misc]
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def mix(encoded: dict[str, list[Encoded]], weights: dict[str, float], seed: int) -> list[Encoded]:
    """One epoch's worth (the total number of examples) drawn per task by weight.

    A task drawn more often than it has examples repeats them (a fresh permutation each pass); one drawn
    less often sees a seeded random subset, so the mixture is fixed for a given seed and resumes exactly.
    """
    total = sum(len(v) for v in encoded.values())
    gen = torch.Generator().manual_seed(seed)
    out: list[Encoded] = []
    for name, examples in encoded.items():
        want = max(1, round(weights[name] * total))
        passes = math.ceil(want / len(examples))
        order = [i for _ in range(passes) for i in torch.randperm(len(examples), generator=gen).tolist()]
        out += [examples[i] for i in order[:want]]
    return out


def link_or_copy(src: Path, dst: Path) -> None:
    """The shared weights appear in every task folder without being stored twice where the disk allows."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
