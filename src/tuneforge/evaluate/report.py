"""The before/after report: base and tuned model on the same test items, with uncertainty.

A gain on 200 test items can be noise. Every headline metric computed from predictions gets a
95% percentile bootstrap interval, and the tuned-minus-base difference gets a *paired* bootstrap
interval (resampling the same items for both models); the report calls a difference real only
when that interval excludes zero. Means of per-item scores (accuracy, exact match) resample the
item scores; corpus-level metrics (macro-F1, field F1, BLEU) are recomputed on each resample.

Besides the task's own metrics, a recipe may select registered text metrics by name
(``eval.metrics: [rouge_1, chrf, bertscore]``); for a task whose references and predictions are text the
report adds them for both models, with the same paired intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tuneforge.evaluate.faithfulness import (faithfulness, faithfulness_markdown, slot_error_rate,
                                             structured_inputs, vocabulary)
from tuneforge.evaluate.metrics import METRICS, TextMetric, bootstrap_ci
from tuneforge.tasks.base import Example, MetricInputs, Task


def model_scores(task: Task, examples: list[Example], predictions: list[dict[str, Any]],
                 extra: dict[str, Any]) -> dict[str, Any]:
    return {**task.score(examples, predictions), **extra}


def build_report(task: Task, examples: list[Example], base: dict[str, Any] | None, tuned: dict[str, Any],
                 *, meta: dict[str, Any], samples: int, metrics: Sequence[str] = ()) -> dict[str, Any]:
    """``base``/``tuned`` are ``{"scores": ..., "items": per-item scores, "predictions": [...]}``;
    ``metrics`` names registered text metrics to add (``eval.metrics``)."""
    report: dict[str, Any] = {**meta, "headline": list(task.headline), "n_test": len(examples),
                              "tuned": dict(tuned["scores"])}
    if base is not None:
        report["base"] = dict(base["scores"])
        report["delta"] = {m: _delta(base["scores"].get(m), tuned["scores"].get(m)) for m in task.headline}
    report["intervals"] = _intervals(task, base, tuned)
    from_predictions = task.score(examples, tuned["predictions"])  # not perplexity, which needs the model
    for metric in task.headline:  # corpus-level metrics (macro-F1, field F1, BLEU): resample whole test sets
        if metric not in report["intervals"] and isinstance(from_predictions.get(metric), float):
            report["intervals"][metric] = _resampled_interval(
                len(examples), _task_metric(task, examples, tuned, metric),
                None if base is None else _task_metric(task, examples, base, metric))
    text = [m for m in metrics if METRICS.config(m).reads == "text"]
    if text:
        _add_text_metrics(report, text, examples, base, tuned)
    for name in (m for m in metrics if m not in text):
        _add_task_metric(report, task, name, examples, base, tuned)
    _add_faithfulness(report, examples, base, tuned)
    report["samples"] = _samples(examples, base, tuned, samples)
    return report


TextPairs = tuple[list[str | list[str]], list[str]]


def text_pairs(examples: list[Example], predictions: list[dict[str, Any]]) -> TextPairs | None:
    """References and predictions as text, or ``None`` when the task's are not text (labels are text).

    An item with several references (``data.references_field``) gives the list of them, so each text
    metric scores it with all of them (BLEU, chrF) or against the best one (ROUGE, METEOR, BERTScore).
    """
    refs: list[str | list[str]] = [e.references if e.references is not None else e.target for e in examples]
    preds = [p["prediction"] for p in predictions]
    if all(isinstance(x, str) for x in preds) and all(_is_text(x) for x in refs):
        return refs, preds
    return None


def _is_text(ref: Any) -> bool:
    return isinstance(ref, str) or (isinstance(ref, list) and all(isinstance(a, str) for a in ref))


def text_metric(name: str, refs: Sequence[str | list[str]], preds: list[str]) -> float:
    """The number the registered text metric ``name`` gives (its ``TextMetric.value`` entry for a dict)."""
    info: TextMetric = METRICS.config(name)
    out = METRICS.get(name)(refs, preds)
    return float(out[info.value] if info.value is not None else out)


def _add_text_metrics(report: dict[str, Any], names: list[str], examples: list[Example],
                      base: dict[str, Any] | None, tuned: dict[str, Any]) -> None:
    """Score the selected text metrics on both models; per-item ones get paired bootstrap intervals."""
    after = text_pairs(examples, tuned["predictions"])
    before = None if base is None else text_pairs(examples, base["predictions"])
    if after is None:
        _skip(report, f"{', '.join(names)}: this task's references and predictions are not text")
        return
    report["metrics"] = names
    for name in names:
        report["tuned"][name] = text_metric(name, *after)
        if before is not None:
            report["base"][name] = text_metric(name, *before)
            report["delta"][name] = report["tuned"][name] - report["base"][name]
        if METRICS.config(name).per_item:
            items_after = [text_metric(name, [r], [p]) for r, p in zip(*after)]
            items_before = None if before is None else [text_metric(name, [r], [p]) for r, p in zip(*before)]
            report["intervals"][name] = _paired_interval(items_after, items_before)
        else:
            report["intervals"][name] = _resampled_interval(
                len(examples), _resampled_text(name, after), None if before is None else _resampled_text(name, before))


def _add_task_metric(report: dict[str, Any], task: Task, name: str, examples: list[Example],
                     base: dict[str, Any] | None, tuned: dict[str, Any]) -> None:
    """A selected metric that reads more than text (``TextMetric.reads``: probabilities, rankings), on the inputs
    the task gives for it, with a paired interval from resampled test sets; skipped with the reason when the
    task's predictions do not hold what it reads or it is undefined on this test set."""
    info: TextMetric = METRICS.config(name)
    after = task.metric_inputs(info.reads, examples, tuned["predictions"])
    before = None if base is None else task.metric_inputs(info.reads, examples, base["predictions"])
    if after is None:
        _skip(report, f"{name}: it reads {info.reads}, which {task.name} predictions do not hold")
        return
    try:
        report["tuned"][name] = _metric_on(name, after, None)
        if before is not None:
            report["base"][name] = _metric_on(name, before, None)
            report["delta"][name] = report["tuned"][name] - report["base"][name]
    except ValueError as err:
        _skip(report, f"{name}: {err}")
        return
    report.setdefault("metrics", []).append(name)
    report["intervals"][name] = _resampled_interval(
        len(examples), lambda idx: _metric_on(name, after, idx),
        None if before is None else (lambda idx: _metric_on(name, before, idx)))


def _skip(report: dict[str, Any], why: str) -> None:
    """Say in the report why a selected metric has no figure (one line per metric, joined)."""
    report["metrics_skipped"] = "; ".join(filter(None, [report.get("metrics_skipped"), why]))


def _metric_on(name: str, inputs: MetricInputs, idx: list[int] | None) -> float:
    """The registered metric ``name`` on the task's inputs, restricted to items ``idx``; NaN where a resample
    leaves it undefined (a label with no test item has no ROC area), which the interval then skips."""
    items, fixed = inputs
    chosen = items if idx is None else tuple([column[i] for i in idx] for column in items)
    info: TextMetric = METRICS.config(name)
    try:
        out = METRICS.get(name)(*chosen, **fixed)
    except ValueError:
        if idx is None:
            raise
        return float("nan")
    return float(out[info.value] if info.value is not None else out)


def _add_faithfulness(report: dict[str, Any], examples: list[Example], base: dict[str, Any] | None,
                      tuned: dict[str, Any]) -> None:
    """Text generated from structured inputs (``key[value]`` or JSON): the slot error rate of both models, per
    item and in total, with the paired interval of its change (see ``evaluate.faithfulness``)."""
    inputs = structured_inputs([e.text for e in examples])
    after = text_pairs(examples, tuned["predictions"])
    if inputs is None or after is None:
        return
    before = None if base is None else text_pairs(examples, base["predictions"])
    vocab = vocabulary(inputs)
    report["faithfulness"] = {"tuned": faithfulness(inputs, after[1])}
    report["tuned"]["slot_error_rate"] = report["faithfulness"]["tuned"]["slot_error_rate"]
    if before is not None:
        report["faithfulness"]["base"] = faithfulness(inputs, before[1])
        report["base"]["slot_error_rate"] = report["faithfulness"]["base"]["slot_error_rate"]
        report["delta"]["slot_error_rate"] = report["tuned"]["slot_error_rate"] - report["base"]["slot_error_rate"]

    def rate(preds: list[str]) -> Callable[[list[int]], float]:
        return lambda idx: slot_error_rate([inputs[i] for i in idx], [preds[i] for i in idx], vocab)

    report["intervals"]["slot_error_rate"] = _resampled_interval(
        len(examples), rate(after[1]), None if before is None else rate(before[1]))


def _resampled_text(name: str, pairs: TextPairs) -> Callable[[list[int]], float]:
    refs, preds = pairs
    return lambda idx: text_metric(name, [refs[i] for i in idx], [preds[i] for i in idx])


def _task_metric(task: Task, examples: list[Example], scored: dict[str, Any],
                 metric: str) -> Callable[[list[int]], float]:
    predictions = scored["predictions"]
    return lambda idx: float(task.score([examples[i] for i in idx], [predictions[i] for i in idx])[metric])


def _delta(before: Any, after: Any) -> float | None:
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return float(after) - float(before)
    return None


def _intervals(task: Task, base: dict[str, Any] | None, tuned: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in task.per_item_metrics:
        after = tuned["items"].get(metric)
        if not after:
            continue
        before = base["items"].get(metric) if base is not None else None
        out[metric] = _paired_interval(after, before or None)
    return out


def _paired_interval(after: list[float], before: list[float] | None) -> dict[str, Any]:
    """Bootstrap intervals of a mean of per-item values, and of its paired change when ``before`` is given."""
    entry: dict[str, Any] = {"tuned": list(bootstrap_ci(after))}
    if before is not None:
        entry["base"] = list(bootstrap_ci(before))
        lo, hi = bootstrap_ci([a - b for a, b in zip(after, before)])
        entry["delta"] = [lo, hi]
        entry["significant"] = lo > 0 or hi < 0
    return entry


def _resampled_interval(n_items: int, tuned: Callable[[list[int]], float],
                        base: Callable[[list[int]], float] | None, n: int = 200, seed: int = 0) -> dict[str, Any]:
    """Paired percentile bootstrap of a metric that is not a mean of per-item scores.

    Each resample draws the same item indices for both models and recomputes the metric from
    scratch (``tuned(idx)``, ``base(idx)``), so the interval of the change accounts for the pairing.
    """
    rng = np.random.default_rng(seed)
    after, before = [], []
    for _ in range(n):
        idx = rng.integers(0, n_items, size=n_items).tolist()
        after.append(tuned(idx))
        if base is not None:
            before.append(base(idx))
    q = [0.025, 0.975]
    entry: dict[str, Any] = {"tuned": np.nanquantile(after, q).tolist()}
    if base is not None:
        entry["base"] = np.nanquantile(before, q).tolist()
        lo, hi = np.nanquantile(np.subtract(after, before), q).tolist()
        entry["delta"], entry["significant"] = [lo, hi], bool(lo > 0 or hi < 0)
    return entry


def _samples(examples: list[Example], base: dict[str, Any] | None, tuned: dict[str, Any],
             n: int) -> list[dict[str, Any]]:
    step = max(1, len(examples) // max(n, 1))
    rows = []
    for i in range(0, len(examples), step)[:n]:
        target = examples[i].target
        row = {"where": examples[i].where, "input": examples[i].text,
               "reference": dataclasses.asdict(target) if dataclasses.is_dataclass(target) else target,
               "tuned": tuned["predictions"][i].get("raw", tuned["predictions"][i]["prediction"])}
        if base is not None:
            row["base"] = base["predictions"][i].get("raw", base["predictions"][i]["prediction"])
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- was fine-tuning worth it?
def baseline_comparison(task: Task, examples: list[Example], tuned: dict[str, Any],
                        systems: dict[str, tuple[Any, float]]) -> dict[str, Any]:
    """Each cheap baseline against the fine-tune on the same test items, with a paired interval, and a verdict.

    ``systems`` maps a baseline's name to (its ``System``: predictions on ``items``, the seconds it took). The
    metric is the task's first per-item one (accuracy): the change fine-tuned minus baseline is resampled over
    the same items, so a verdict holds only when its interval clears zero.
    """
    metric = task.per_item_metrics[0]
    rows: dict[str, Any] = {}
    for name, (system, seconds) in systems.items():
        items = list(system.items)
        mine = [tuned["items"][metric][i] for i in items]
        theirs = task.item_scores([examples[i] for i in items], system.predictions)[metric]
        entry = _paired_interval(mine, theirs)
        rows[name] = {"description": system.description, metric: float(np.mean(theirs)),
                      "tuned": float(np.mean(mine)), "n_items": len(items), "seconds": seconds,
                      "delta": entry["delta"], "significant": entry["significant"]}
    return {"metric": metric, "systems": rows, "verdict": verdict(metric, rows)}


def verdict(metric: str, rows: dict[str, Any]) -> str:
    """One line: does the fine-tune beat every baseline, with the paired interval of the closest one?"""
    if not rows:
        return "no baseline was scored"
    closest = min(rows, key=lambda n: rows[n]["delta"][0])
    lo, hi = rows[closest]["delta"]
    gains = ", ".join(f"{n} by {r['tuned'] - r[metric]:+.3f}" for n, r in rows.items())
    ci = f"paired 95% CI vs {closest} [{lo:+.3f}, {hi:+.3f}]"
    if lo > 0:
        which = "both baselines" if len(rows) == 2 else "every baseline"
        return f"fine-tuning beats {which} on {metric}: {gains} ({ci})"
    if hi < 0:
        return (f"a baseline is better: do not fine-tune ({closest} {rows[closest][metric]:.3f} vs fine-tuned "
                f"{rows[closest]['tuned']:.3f} {metric}, {ci})")
    return (f"a baseline is as good: do not fine-tune ({closest} {rows[closest][metric]:.3f} vs fine-tuned "
            f"{rows[closest]['tuned']:.3f} {metric}, {ci} includes zero)")


def baseline_table(report: dict[str, Any]) -> list[list[str]]:
    """The baselines beside the fine-tune: their score, the paired change and its interval, their cost."""
    b = report["baselines"]
    metric = b["metric"]
    rows = [["system", metric, "fine-tuned minus it", "95% CI (paired)", "seconds"]]
    for name, r in b["systems"].items():
        lo, hi = r["delta"]
        rows.append([name, f"{r[metric]:.4f}", f"{r['tuned'] - r[metric]:+.4f}",
                     f"[{lo:+.4f}, {hi:+.4f}]" + (" real" if r["significant"] else " not significant"),
                     f"{r['seconds']:.1f}"])
    return rows


def _baseline_lines(report: dict[str, Any]) -> list[str]:
    if not report.get("baselines"):
        return []
    rows = baseline_table(report)
    md = ["", "## Was fine-tuning worth it?", "", f"**{report['baselines']['verdict']}**", "",
          "Cheap baselines on the same test items: " + "; ".join(
              f"{n}: {r['description']}" for n, r in report["baselines"]["systems"].items()) + ".", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return md + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def _grounding_lines(report: dict[str, Any]) -> list[str]:
    """Extraction: the share of predicted values the input never states, per field, base beside tuned."""
    tuned = report["tuned"].get("invented_by_field")
    if tuned is None:
        return []
    base = report.get("base", {}).get("invented_by_field", {})
    md = ["", "## Grounding: predicted values that do not occur in the input", "",
          f"Invented-value rate: {report['tuned']['invented_rate']:.3f} tuned"
          + (f", {report['base']['invented_rate']:.3f} base" if "invented_rate" in report.get("base", {}) else "")
          + ".", "", "| field | tuned | base |", "|---|---|---|"]
    return md + [f"| {f} | {v:.3f} | {_fmt(base.get(f))} |" for f, v in sorted(tuned.items(), key=lambda kv: -kv[1])]


def _choice_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    if report.get("choices"):
        lines += ["", "## Chosen for you", "", "The recipe left these keys to tuneforge (give one to decide it):", ""]
        lines += [f"- `{c['key']}` = `{c['value']}`: {c['reason']}" for c in report["choices"]]
    if report.get("phases"):
        lines += ["", "Wall time by phase: " + ", ".join(
            f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in report["phases"].items()) + "."]
    return lines


# ----------------------------------------------------------------------------- rendering
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def headline_table(report: dict[str, Any]) -> list[list[str]]:
    rows = [["metric", "base", "tuned", "change", "95% CI of change"]]
    faithful = ["slot_error_rate"] if "faithfulness" in report else []
    for metric in report["headline"] + report.get("metrics", []) + faithful:
        ci = report["intervals"].get(metric, {}).get("delta")
        sig = report["intervals"].get(metric, {}).get("significant")
        ci_text = "-" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" + (" real" if sig else " not significant")
        delta = report.get("delta", {}).get(metric)
        rows.append([metric, _fmt(report.get("base", {}).get(metric)), _fmt(report["tuned"].get(metric)),
                     "-" if delta is None else f"{delta:+.4f}", ci_text])
    return rows


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _privacy_lines(privacy: dict[str, Any] | None) -> list[str]:
    if not privacy:
        return []
    return ["", "## Differential privacy", "",
            f"DP-SGD spent epsilon = {privacy['epsilon']:.2f} at delta = {privacy['delta']:.2e} "
            f"(noise multiplier {privacy['noise_multiplier']:.3f}, per-example clip {privacy['max_grad_norm']}, "
            f"{privacy['steps']} steps at sampling rate {privacy['sample_rate']:.4f}; {privacy['accountant']})."]


def _forgetting_lines(forgetting: dict[str, Any] | None) -> list[str]:
    if not forgetting:
        return []
    b, a = forgetting["before"], forgetting["after"]
    return ["", "## General ability (forgetting check)", "",
            "| measure | before | after | change |", "|---|---|---|---|",
            f"| general-text perplexity | {b['general_perplexity']:.3f} | {a['general_perplexity']:.3f} | "
            f"{forgetting['perplexity_change']:+.1%} |",
            f"| probe accuracy ({forgetting['probe_questions']} questions) | {b['probe_accuracy']:.3f} | "
            f"{a['probe_accuracy']:.3f} | {forgetting['probe_accuracy_change']:+.3f} |"]


def _interval_lines(report: dict[str, Any]) -> list[str]:
    """The tuned model's own 95% intervals (the table above shows those of the change only)."""
    rows = [(m, e["tuned"]) for m, e in report.get("intervals", {}).items() if "tuned" in e]
    if not rows:
        return []
    md = ["", "## 95% bootstrap intervals of the tuned model", "", "| metric | value | 95% CI |", "|---|---|---|"]
    md += [f"| {m} | {_fmt(report['tuned'].get(m))} | [{lo:.4f}, {hi:.4f}] |" for m, (lo, hi) in rows]
    return md


def _side_by_side_lines(tuned: dict[str, Any]) -> list[str]:
    """Preference runs: greedy answers of the reference and the tuned model, with the judge's rewards."""
    rows = tuned.get("side_by_side") or []
    if not rows:
        return []
    md = ["", "## Generations side by side (reference model vs tuned)", ""]
    for r in rows:
        judge = f" (judge: reference {r['judge'][1]:+.3f}, tuned {r['judge'][0]:+.3f})" if "judge" in r else ""
        md += [f"- `{r['where']}` prompt: {r['prompt'][:300]!r}{judge}", f"  - reference: {r['reference_model']!r}",
               f"  - tuned: {r['tuned']!r}"]
    return md


def render_markdown(report: dict[str, Any]) -> str:
    rows = headline_table(report)
    md = [f"# tuneforge report: {report.get('task')} on {report.get('model')} ({report.get('method')})", "",
          f"Test items: {report['n_test']} (held out, never trained on). "
          "Base = the untouched base model on the same items.",
          "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    if "parameters" in report:
        p = report["parameters"]
        md += ["", f"Parameters: {p['total']:,} total, {p['trainable']:,} trainable."]
    if "adapter_bytes" in report:
        md += [f"Trained weights on disk: {report['adapter_bytes'] / 1e6:.2f} MB."]
    if "training" in report:
        t = report["training"]
        md += [f"Training: {t.get('steps')} steps in {t.get('seconds', 0):.0f} s, best step {t.get('best_step')}."]
    md += _baseline_lines(report) + _grounding_lines(report) + _choice_lines(report)
    md += _interval_lines(report) + _side_by_side_lines(report["tuned"])
    md += _privacy_lines(report.get("privacy")) + _forgetting_lines(report.get("forgetting"))
    if report.get("analysis"):
        from tuneforge.evaluate.errors_analysis import analysis_markdown

        md.append(analysis_markdown(report["analysis"]))
    if report.get("faithfulness"):
        md += faithfulness_markdown(report["faithfulness"])
    if report.get("golden"):
        from tuneforge.evaluate.golden import golden_markdown

        md.append(golden_markdown(report["golden"]))
    md += ["", "## Samples", ""]
    for s in report.get("samples", []):
        md += [f"- `{s['where']}` input: {s['input']!r}", f"  - reference: `{s['reference']}`"]
        if "base" in s:
            md.append(f"  - base: `{s['base']}`")
        md.append(f"  - tuned: `{s['tuned']}`")
    return "\n".join(md) + "\n"
