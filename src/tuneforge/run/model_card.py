"""``MODEL_CARD.md``: what a run knows about its model, written out for the people who will use it.

Sections follow Mitchell et al., "Model Cards for Model Reporting" (https://arxiv.org/abs/1810.03993),
trimmed to what a run can state as fact rather than guess: the base model and its licence (models
registry), the data (fingerprints and sizes), the method and hyperparameters (the resolved recipe),
the evaluation with confidence intervals (report.json), known limitations measured on the test split
(worst classes or fields, failure examples from the saved predictions), intended use, and the
environment. Everything is read from the run folder; no model is loaded, so it is cheap to call at
the end of every run, compression and export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tuneforge.evaluate.fairness import card_lines
from tuneforge.run.folder import RunDir
from tuneforge.files import write_text_atomic
from tuneforge.tasks import TASKS
from tuneforge.tasks.base import Task

CARD_FILE = "MODEL_CARD.md"
FAIRNESS_FILE = "fairness.json"  # written by `tuneforge fairness RUN`
FAILURES_SHOWN = 5
WORST_SHOWN = 3


def write_model_card(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Render the card of ``run_dir`` to ``out`` (default ``RUN_DIR/MODEL_CARD.md``), atomically."""
    path = Path(out) if out is not None else Path(run_dir) / CARD_FILE
    write_text_atomic(path, render_model_card(run_dir))
    return path


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def render_model_card(run_dir: Path | str) -> str:
    run = RunDir(run_dir)
    if not run.recipe.is_file():
        from tuneforge.errors import UserError

        raise UserError(f"{run.root} has no recipe.yaml, so it is not a tuneforge run folder")
    recipe = yaml.safe_load(run.recipe.read_text(encoding="utf-8"))
    report = _read_json(run.report_json)
    compression = _read_json(run.root / "compression.json")
    parts = [
        _title(recipe, compression),
        _base_model(recipe),
        _intended_use(recipe, _read_json(run.data / "schema.json") or {}, _read_json(run.root / FAIRNESS_FILE)),
        _data(_read_json(run.data / "fingerprints.json")),
        _method(recipe, report),
        _compression(compression),
        _evaluation(report),
        _limitations(run, recipe, report),
        _environment(_read_json(run.environment)),
    ]
    return "\n".join(p for p in parts if p)


def _title(recipe: dict[str, Any], compression: dict[str, Any] | None) -> str:
    name = Path(str(recipe.get("output", "run"))).name
    what = f" (compressed: {compression['config']['method']})" if compression else ""
    return (f"# Model card: {name}{what}\n\nTask `{recipe['task']}`, fine-tuned by tuneforge from "
            f"`{recipe['model']}` with `{recipe['method']['name']}`. Written from the run folder; every figure "
            "below is measured, not claimed.\n")


def _base_model(recipe: dict[str, Any]) -> str:
    from tuneforge.models.resolve import MODELS

    name = recipe["model"]
    if name in MODELS:
        spec = MODELS.get(name)
        return (f"## Base model\n\n- `{name}`: {spec.description}\n- architecture `{spec.architecture}` ({spec.kind}), "
                f"about {spec.params / 1e6:.0f}M parameters\n- licence: **{spec.licence}** (the tuned weights are a "
                "derivative work: keep its terms)\n")
    return (f"## Base model\n\n- local folder `{name}` (not in tuneforge's registry): its licence is **unknown to "
            "tuneforge**; check the model's own card before you share the tuned weights\n")


def answers_task(recipe: dict[str, Any]) -> type[Task]:
    """The task class that speaks for the run's answers (an RL run's are its ``rl.task``'s)."""
    return TASKS.get(recipe["task"]).answers_task(recipe)


def _intended_use(recipe: dict[str, Any], schema: dict[str, Any], fairness: dict[str, Any] | None) -> str:
    """What the model is for, and what bias checks (``tuneforge fairness``, ``fairness.json``) found, if any ran."""
    does = answers_task(recipe).card_purpose(schema)
    return (f"## Intended use\n\nThis model {does}. It is meant for inputs like its training data (see Data) and "
            "was evaluated only on a held-out split of that data. Out of scope: inputs from another domain, "
            "language or format; decisions about people without human review; any use the base model's licence "
            f"forbids. {card_lines(fairness)}\n")


def _data(fingerprints: dict[str, Any] | None) -> str:
    if not fingerprints:
        return "## Data\n\nNo data/fingerprints.json in this run folder.\n"
    lines = ["## Data", "", "| split | rows | sha256 of the rows |", "|---|---|---|"]
    for split, info in fingerprints.get("splits", {}).items():
        lines.append(f"| {split} | {info['rows']} | `{info['sha256'][:16]}` |")
    lines += ["", "Source files:"]
    lines += [f"- {k}: `{v['path']}` (sha256 `{v['sha256'][:16]}`)" for k, v in fingerprints.get("files", {}).items()]
    return "\n".join(lines) + "\n"


def _method(recipe: dict[str, Any], report: dict[str, Any] | None) -> str:
    method = ", ".join(f"{k}={v}" for k, v in recipe["method"].items() if k != "name") or "no options"
    train = recipe.get("train", {})
    keys = ("epochs", "max_steps", "lr", "batch_size", "grad_accum", "scheduler", "warmup_fraction",
            "weight_decay", "max_length", "seed")
    lines = ["## Method and hyperparameters", "", f"- method: `{recipe['method']['name']}` ({method})",
             "- training: " + ", ".join(f"{k}={train[k]}" for k in keys if train.get(k) is not None)]
    if report and "parameters" in report:
        p = report["parameters"]
        lines.append(f"- parameters: {p['total']:,} in total, {p['trainable']:,} trained")
    if report and report.get("training"):
        t = report["training"]
        lines.append(f"- ran {t.get('steps')} optimizer steps in {t.get('seconds', 0):.0f} s "
                     f"(best step {t.get('best_step')}, stopped early: {t.get('stopped_early')})")
    lines.append("- the full resolved recipe is `recipe.yaml` in the run folder")
    return "\n".join(lines) + "\n"


def _compression(compression: dict[str, Any] | None) -> str:
    if not compression:
        return ""
    size, ms = compression["size_bytes"], compression["ms_per_item"]
    return (f"## Compression\n\n- method `{compression['config']['method']}` of the run `{compression['source_run']}`\n"
            f"- weights {size['compressed'] / 1e6:.1f} MB vs {size['uncompressed'] / 1e6:.1f} MB uncompressed "
            f"(ratio {size['ratio']:.3f})\n- latency {ms['compressed']:.1f} vs {ms['uncompressed']:.1f} ms per item "
            f"at batch size {compression['batch_size']} (ratio {ms['ratio']:.3f})\n"
            "- in the evaluation below, \"base\" is the uncompressed tuned model\n")


def _evaluation(report: dict[str, Any] | None) -> str:
    if not report:
        return "## Evaluation\n\nNo report.json: this run has no test split or did not finish.\n"
    base_is = report.get("base_is", "the untouched base model")
    lines = ["## Evaluation", "", f"{report['n_test']} held-out test items; base = {base_is}. Intervals are "
             "bootstrap 95% intervals; the change's interval is paired (same items for both models).", "",
             "| metric | base | tuned | 95% CI (tuned) | change | 95% CI (change) |", "|---|---|---|---|---|---|"]
    for metric in report["headline"]:
        ci = report.get("intervals", {}).get(metric, {})
        lines.append(f"| {metric} | {_num(report.get('base', {}).get(metric))} | {_num(report['tuned'].get(metric))} "
                     f"| {_ci(ci.get('tuned'))} | {_num(report.get('delta', {}).get(metric), sign=True)} "
                     f"| {_ci(ci.get('delta'), sign=True)} |")
    return "\n".join(lines) + "\n"


def _num(value: Any, sign: bool = False) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def _ci(pair: list[float] | None, sign: bool = False) -> str:
    return "-" if not pair else f"[{_num(pair[0], sign)}, {_num(pair[1], sign)}]"


def worst_slices(report: dict[str, Any]) -> list[tuple[str, float, int]]:
    """The lowest-F1 classes (classification) or fields (extraction): ``(name, f1, support)``."""
    tuned = report.get("tuned", {})
    table = tuned.get("per_class") or tuned.get("per_field") or {}
    rows = [(name, float(v["f1"]), int(v.get("support", 0))) for name, v in table.items() if v.get("support", 0)]
    return sorted(rows, key=lambda r: (r[1], r[0]))[:WORST_SHOWN]


def failures(run: RunDir, recipe: dict[str, Any], limit: int = FAILURES_SHOWN) -> list[dict[str, Any]]:
    """Test items whose saved tuned prediction differs from the reference, for tasks whose answers are right
    or wrong (``Task.reference_field``: classification, extraction)."""
    task, data = answers_task(recipe), recipe["data"]
    test_file, pred_file = run.data / "test.jsonl", run.predictions / "tuned.jsonl"
    field = task.reference_field(data)
    if field is None or not test_file.is_file() or not pred_file.is_file():
        return []
    tests = [json.loads(x) for x in test_file.read_text(encoding="utf-8").split("\n") if x.strip()]
    preds = [json.loads(x) for x in pred_file.read_text(encoding="utf-8").split("\n") if x.strip()]
    out = []
    for row, pred in zip(tests, preds):
        ref, got = row["fields"].get(field), pred.get("prediction")
        if task.is_wrong(ref, got):
            out.append({"where": f"{Path(row['source']).name}:{row['line']}",
                        "input": row["fields"].get(data["text_field"]), "reference": ref, "prediction": got})
        if len(out) >= limit:
            break
    return out


def _limitations(run: RunDir, recipe: dict[str, Any], report: dict[str, Any] | None) -> str:
    lines = ["## Known limitations", ""]
    if report:
        worst = worst_slices(report)
        if worst:
            lines.append(f"Weakest {answers_task(recipe).slice_noun} on the test split (F1, support):")
            lines += [f"- `{name}`: F1 {f1:.3f} on {n} items" for name, f1, n in worst]
            lines.append("")
    bad = failures(run, recipe)
    if bad:
        lines.append(f"Failure examples (the first {len(bad)} test items the model gets wrong):")
        for b in bad:
            lines.append(f"- `{b['where']}` {json.dumps(b['input'], ensure_ascii=False)}: expected "
                         f"`{json.dumps(b['reference'], ensure_ascii=False)}`, "
                         f"got `{json.dumps(b['prediction'], ensure_ascii=False)}`")
        lines.append("")
    elif (answers_task(recipe).reference_field(recipe["data"]) is not None
          and (run.predictions / "tuned.jsonl").is_file()):
        lines += ["No test item was answered wrongly; the test split may be too easy or too small to show "
                  "this model's failures.", ""]
    lines.append("The figures hold for data like the test split only; they say nothing about other domains.")
    return "\n".join(lines) + "\n"


def _environment(env: dict[str, Any] | None) -> str:
    if not env:
        return ""
    return "## Environment\n\n" + "\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n"
