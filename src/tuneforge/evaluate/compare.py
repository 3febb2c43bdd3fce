"""``tuneforge compare``: the fine-tune beside the baselines a user could have used instead, with numbers.

Every system is scored on the same test items (the prompting baselines possibly on a seeded subset,
and then every comparison with them is paired on that subset). Each row gets accuracy and macro-F1
with 95% percentile bootstrap intervals, a paired test against the fine-tune (McNemar's exact or
chi-square test on the items, and a paired bootstrap interval of the accuracy difference), and its
costs: seconds of training (or of building an index) and inference milliseconds per item.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import UserError
from tuneforge.evaluate import plots
from tuneforge.evaluate import page as html
from tuneforge.evaluate.baselines import BASELINES, BaselineContext, System, other_run
from tuneforge.evaluate.metrics import accuracy, bootstrap_ci, macro_f1
from tuneforge.evaluate.metrics_extra import mcnemar, paired_bootstrap
from tuneforge.run.loading import load_split, load_task
from tuneforge.files import write_json_atomic, write_text_atomic

DEFAULT_BASELINES = ("zero-shot", "few-shot", "retrieval", "knn", "tfidf")
ALPHA = 0.05


def _macro_f1_ci(refs: list[str], preds: list[str], labels: list[str], n: int = 500, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(refs), size=len(refs))
        values.append(macro_f1([refs[i] for i in idx], [preds[i] for i in idx], labels=labels))
    return np.quantile(values, [ALPHA / 2, 1 - ALPHA / 2]).tolist()


def score_system(system: System, refs: list[str], labels: list[str], reference: System | None) -> dict[str, Any]:
    """Quality with intervals, costs, and (when ``reference`` is given) a paired test against it."""
    r = [refs[i] for i in system.items]
    p = [x["prediction"] for x in system.predictions]
    correct = [float(a == b) for a, b in zip(r, p)]
    row: dict[str, Any] = {
        "name": system.name, "description": system.description, "n_items": len(system.items),
        "accuracy": accuracy(r, p), "macro_f1": macro_f1(r, p, labels=labels),
        "ci": {"accuracy": list(bootstrap_ci(correct)), "macro_f1": _macro_f1_ci(r, p, labels)},
        "train_seconds": system.train_seconds, "latency_ms": system.latency_ms, "notes": list(system.notes),
    }
    if reference is not None and reference is not system:
        ref_pred = {i: x["prediction"] for i, x in zip(reference.items, reference.predictions)}
        ft_correct = [float(ref_pred[i] == refs[i]) for i in system.items]
        test = mcnemar([bool(c) for c in correct], [bool(c) for c in ft_correct])
        boot = paired_bootstrap(correct, ft_correct)
        real = test["p_value"] < ALPHA
        better = "fine-tune better" if boot["mean_diff"] > 0 else "baseline better"
        row["vs_fine_tuned"] = {
            "fine_tuned_accuracy_same_items": float(np.mean(ft_correct)),
            "accuracy_gain": boot["mean_diff"], "gain_ci": [boot["ci_low"], boot["ci_high"]],
            "mcnemar": test, "verdict": better if real else "no real difference",
        }
    return row


def compare(run_dir: Path | str, *, baselines: list[str] | None = None, k: int = 5,
            prompt_items: int | None = None, prompt_model: str = "smollm2-135m-instruct", encoder_path: str | None = None,
            seed: int = 0, output: Path | str | None = None, runs: list[Path | str] | None = None,
            echo: Any = print) -> dict[str, Any]:
    """Score the run's fine-tune and each baseline on its test split; write compare.json/.md/.html.

    ``run_dir`` is a finished run folder (``tuneforge compare RECIPE`` trains the recipe first, through
    ``tuneforge.run.composed.finished_run``).
    ``runs``: other finished runs (same test rows) whose tuned models join the table, paired the same way.
    """
    names = list(baselines or DEFAULT_BASELINES)
    for name in names:
        BASELINES.get(name)  # fail on a typo before any model loads
    recipe, task, _ = load_task(run_dir)
    if not task.predicts_labels:
        raise UserError(f"tuneforge compare supports classification runs; {run_dir} is a {task.name} run")
    test = load_split(run_dir, task, "test")
    if not test:
        raise UserError(f"{run_dir} has no test split to compare on")
    ctx = BaselineContext(run_dir=Path(run_dir), recipe=recipe, task=task, train=load_split(run_dir, task, "train"),
                          test=test, k=k, seed=seed, prompt_items=prompt_items, prompt_model=prompt_model,
                          encoder_path=encoder_path)
    systems: list[System] = []
    for name in [n for n in names if n != "fine-tuned"] + ["fine-tuned"]:
        echo(f"compare: {name}")
        started = time.perf_counter()
        systems.append(BASELINES.get(name)(ctx))
        echo(f"compare: {name} done in {time.perf_counter() - started:.1f} s")
    for other in runs or []:
        echo(f"compare: run {other}")
        systems.insert(-1, other_run(ctx, Path(other)))
    refs = [e.target for e in test]
    reference = systems[-1]
    rows = [score_system(s, refs, task.schema["labels"], reference) for s in systems]
    result = {"run": str(run_dir), "model": recipe.model, "task": task.name, "n_test": len(test), "k": k,
              "seed": seed, "alpha": ALPHA, "rows": rows}
    out = Path(output) if output else Path(run_dir) / "compare"
    write_json_atomic(out / "compare.json", result)
    write_text_atomic(out / "compare.md", render_markdown(result))
    write_text_atomic(out / "compare.html", render_html(result))
    echo(render_markdown(result))
    echo(f"written to {out}/compare.{{json,md,html}}")
    return result


# ----------------------------------------------------------------------------- rendering
def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [["system", "items", "accuracy [95% CI]", "macro-F1 [95% CI]", "vs fine-tune: accuracy gain [95% CI]",
             "McNemar p", "verdict", "train s", "latency ms/item"]]
    for row in result["rows"]:
        vs = row.get("vs_fine_tuned")
        acc, f1 = row["ci"]["accuracy"], row["ci"]["macro_f1"]
        rows.append([
            row["name"] + (" *" if row["notes"] else ""), str(row["n_items"]),
            f"{row['accuracy']:.4f} [{acc[0]:.4f}, {acc[1]:.4f}]", f"{row['macro_f1']:.4f} [{f1[0]:.4f}, {f1[1]:.4f}]",
            "-" if vs is None else f"{vs['accuracy_gain']:+.4f} [{vs['gain_ci'][0]:+.4f}, {vs['gain_ci'][1]:+.4f}]",
            "-" if vs is None else f"{vs['mcnemar']['p_value']:.2g}", "-" if vs is None else vs["verdict"],
            f"{row['train_seconds']:.1f}", f"{row['latency_ms']:.2f}",
        ])
    return rows


def _notes(result: dict[str, Any]) -> list[str]:
    lines = [f"{r['name']}: {r['description']}" for r in result["rows"]]
    lines += [f"* {r['name']}: {note}" for r in result["rows"] for note in r["notes"]]
    lines.append("Accuracy gain = fine-tune minus the baseline on the baseline's items (paired bootstrap, 1000 "
                 f"resamples); a difference is called real when McNemar's p < {ALPHA}. Train s for knn/retrieval is "
                 "the time to embed the training set (the index); latencies are wall-clock on this machine.")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    rows = table_rows(result)
    md = [f"# tuneforge compare: {result['model']} fine-tune vs baselines", "",
          f"Run `{result['run']}`, {result['n_test']} test items, k = {result['k']}.", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    md += [""] + [f"- {line}" for line in _notes(result)]
    return "\n".join(md) + "\n"


def render_html(result: dict[str, Any]) -> str:
    chart = plots.systems(result["rows"], "accuracy")
    sections = [("", html.paragraph(f"Run {result['run']}, {result['n_test']} test items, k = {result['k']}.")),
                ("Quality, uncertainty and cost", html.table(table_rows(result))),
                ("Quality against latency", html.figure(chart, "accuracy (95% CI) against inference latency")),
                ("Notes", "".join(html.paragraph(line, "note") for line in _notes(result)))]
    return html.page(f"tuneforge compare: {result['model']} fine-tune vs baselines", sections)
