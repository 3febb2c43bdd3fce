"""report.html: the run's report as one self-contained page with figures, and the figures' numbers.

``add_analysis`` adds the error analysis and the data behind every figure to the report dict (so
``report.json`` holds every number a figure shows); ``render_html`` draws the page from that dict
alone, so the page can be redrawn from report.json at any time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.readers import Record
from tuneforge.run.splits import load_saved_split
from tuneforge.errors import ConfigError
from tuneforge.evaluate import page as html
from tuneforge.evaluate.errors_analysis import analyse, worst_title
from tuneforge.evaluate.report import headline_table
from tuneforge.run.folder import RunDir
from tuneforge.tasks.base import Example, Task

LEARNING_CURVE = "learning_curve.json"  # written into a run folder by `tuneforge curve --attach RUN`


def loss_curve(metrics_log: Path, window: int = 20) -> dict[str, Any] | None:
    """Training loss per step, its trailing moving average, and validation entries, from metrics.jsonl."""
    if not metrics_log.is_file():
        return None
    rows = [json.loads(line) for line in metrics_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = [r for r in rows if "event" not in r and "loss" in r]
    if not steps:
        return None
    loss = [float(r["loss"]) for r in steps]
    cum = np.cumsum(np.r_[0.0, loss])
    smoothed = [(cum[i + 1] - cum[max(0, i + 1 - window)]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(loss))]
    val = [r for r in rows if r.get("event") == "validation"]
    return {"steps": [int(r["step"]) for r in steps], "loss": loss, "smoothed": [float(s) for s in smoothed],
            "window": window, "val_steps": [int(r["step"]) for r in val],
            "val_loss": [float(r["val_loss"]) for r in val if "val_loss" in r]}


def slice_fields(records: list[Record], names: list[str], where: str) -> dict[str, list[Any]]:
    """Values of the data fields named in ``eval.slice_by`` for each record, in order.

    Called before training too, so a misspelt field fails in seconds, not after the run.
    """
    if not names:
        return {}
    missing = [name for name in names if all(name not in r.fields for r in records)]
    if missing:
        present = sorted(records[0].fields) if records else []
        raise ConfigError(f"eval.slice_by: no row of {where} has the field(s) {missing}; fields present: {present}")
    return {name: [r.fields.get(name) for r in records] for name in names}


def add_analysis(report: dict[str, Any], run: RunDir, task: Task, test: list[Example],
                 predictions: list[dict[str, Any]]) -> None:
    """Error analysis of the tuned predictions, and the numbers behind each figure, into ``report``."""
    records = load_saved_split(run.data, "test") if task.settings.eval.slice_by else []
    fields = slice_fields(records, task.settings.eval.slice_by, str(run.data / "test.jsonl"))
    report["analysis"] = analyse(task, test, predictions, fields)
    figures: dict[str, Any] = {}
    curve = loss_curve(run.metrics)
    if curve is not None:
        figures["loss_curve"] = curve
    if isinstance(report["tuned"].get("confusion_matrix"), dict):
        figures["confusion_matrix"] = report["tuned"]["confusion_matrix"]
    if report["analysis"].get("calibration"):
        figures["calibration"] = report["analysis"]["calibration"]
    if (run.root / LEARNING_CURVE).is_file():
        figures["learning_curve"] = json.loads((run.root / LEARNING_CURVE).read_text(encoding="utf-8"))
    report["figures"] = figures


def _figures_html(figures: dict[str, Any]) -> str:
    from tuneforge.evaluate import plots  # matplotlib loads only when a page is drawn

    parts = []
    if "loss_curve" in figures:
        parts.append(html.figure(plots.loss_curve(figures["loss_curve"]), "training loss"))
    if "learning_curve" in figures:
        parts.append(html.figure(plots.learning_curve(figures["learning_curve"]), "learning curve"))
    if "confusion_matrix" in figures:
        cm = figures["confusion_matrix"]
        parts.append(html.figure(plots.confusion(cm["labels"], cm["matrix"]), "confusion matrix (tuned, test)"))
    if "calibration" in figures:
        parts.append(html.figure(plots.reliability(figures["calibration"]), "reliability diagram (tuned, test)"))
    return "".join(parts)


def _analysis_html(analysis: dict[str, Any]) -> str:
    parts = []
    if analysis.get("confusion_pairs"):
        rows = [["true", "predicted", "count"]] + [[p["true"], p["predicted"], p["count"]]
                                                   for p in analysis["confusion_pairs"]]
        parts.append("<h3>Most frequent confusions</h3>" + html.table(rows))
    for name, slices in analysis.get("slices", {}).items():
        rows = [["slice", "n", analysis["metric"], "95% CI"]]
        rows += [[s["slice"], s["n"], f"{s['score']:.4f}", f"[{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"] for s in slices]
        parts.append(f"<h3>{html.esc(analysis['metric'])} by {html.esc(name)}</h3>" + html.table(rows))
    worst = analysis.get("worst") or []
    if worst:
        confident = "confidence" in worst[0]
        first = (analysis.get("ranked_by") or ["score"])[0]
        rows = [["where", "input", "reference", "prediction", "confidence" if confident else first]]
        rows += [[w["where"], w["input"], w["reference"], w["prediction"],
                  f"{w['confidence' if confident else 'score']:.3f}"] for w in worst]
        title = "Most confident mistakes" if confident else worst_title(analysis)
        parts.append(f"<h3>{title}</h3>" + html.table(rows))
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one HTML page (figures embedded as base64 PNG)."""
    intro = (f"Test items: {report['n_test']} (held out, never trained on). "
             "Base = the untouched base model on the same items.")
    facts = []
    if "parameters" in report:
        params = report["parameters"]
        facts.append(f"Parameters: {params['total']:,} total, {params['trainable']:,} trainable.")
    if "training" in report:
        t = report["training"]
        facts.append(f"Training: {t.get('steps')} steps in {t.get('seconds', 0):.0f} s, "
                     f"best step {t.get('best_step')}.")
    sections = [("", html.paragraph(intro) + "".join(html.paragraph(f, "note") for f in facts)),
                ("Headline: base vs tuned, 95% paired bootstrap intervals", html.table(headline_table(report)))]
    figures = _figures_html(report.get("figures", {}))
    if figures:
        sections.append(("Figures", figures))
    if report.get("analysis"):
        sections.append(("Error analysis (tuned model)", _analysis_html(report["analysis"])))
    if report.get("golden"):
        g = report["golden"]
        base = g.get("base") or [None] * len(g["tuned"])
        rows = [["case", "base", "tuned", "tuned answer", "why it fails"]]
        rows += [[t["case"], "-" if b is None else ("pass" if b["passed"] else "fail"),
                  "pass" if t["passed"] else "fail",
                  t["answer"], "; ".join(t["failures"]) or "-"] for t, b in zip(g["tuned"], base)]
        verdict = f"{g['n_passed']}/{g['n_cases']} golden cases pass on the tuned model."
        if "fixed" in g:
            verdict += (f" Fixed by the tune: {', '.join(g['fixed']) or 'none'}; "
                        f"broken: {', '.join(g['broken']) or 'none'}.")
        sections.append(("Regression gate (eval.golden)", html.paragraph(verdict) + html.table(rows)))
    samples = report.get("samples") or []
    if samples:
        rows = [["where", "input", "reference", "base", "tuned"]]
        rows += [[s["where"], s["input"], s["reference"], s.get("base", "-"), s["tuned"]] for s in samples]
        sections.append(("Samples with references", html.table(rows)))
    title = f"tuneforge report: {report.get('task')} on {report.get('model')} ({report.get('method')})"
    return html.page(title, sections)
