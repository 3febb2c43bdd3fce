"""Where the tuned model still fails: error analysis written into every report.

- the most confident mistakes (classification: wrong answers ranked by the model's probability;
  other tasks: the lowest-scoring items);
- the most frequent confusion pairs (true label -> predicted label);
- per-slice scores: by reference label, by input-length bucket (quartiles of characters), and by
  any field of the data named in ``eval.slice_by``, each with a 95% bootstrap interval so a slice of
  six items is not read as a finding;
- calibration: a reliability table (10 equal-width confidence bins) and the expected calibration
  error (Guo et al., 2017, https://arxiv.org/abs/1706.04599) when predictions carry a confidence.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from tuneforge.evaluate.metrics import bootstrap_ci
from tuneforge.tasks.base import Example, Task


def calibration(correct: list[bool], confidence: list[float], n_bins: int = 10) -> dict[str, Any]:
    """Reliability bins and ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|.

    Bins are ``[i/n, (i+1)/n)``, the last one closed at 1.0.

    >>> calibration([True, False], [0.9, 0.9])["ece"]
    0.4
    """
    if len(correct) != len(confidence) or not correct:
        raise ValueError("calibration needs one confidence per prediction, and at least one")
    conf = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)  # (N,)
    hit = np.asarray(correct, dtype=np.float64)  # (N,)
    which = np.minimum((conf * n_bins).astype(int), n_bins - 1)  # (N,)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        acc = float(hit[mask].mean()) if count else 0.0
        mean_conf = float(conf[mask].mean()) if count else 0.0
        ece += count / len(hit) * abs(acc - mean_conf)
        bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "count": count, "accuracy": acc,
                     "confidence": mean_conf})
    return {"bins": bins, "ece": round(ece, 12)}


def confusion_pairs(confusion: dict[str, Any], top: int = 10) -> list[dict[str, Any]]:
    """Off-diagonal cells of a confusion matrix, most frequent first."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    pairs = [{"true": labels[i], "predicted": labels[j], "count": v}
             for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and v]
    return sorted(pairs, key=lambda p: (-p["count"], p["true"], p["predicted"]))[:top]


def _shown(prediction: dict[str, Any]) -> Any:
    return prediction.get("raw", prediction["prediction"])


def worst_items(examples: list[Example], predictions: list[dict[str, Any]],
                item: list[float] | list[tuple[float, ...]] | None, top: int = 10) -> list[dict[str, Any]]:
    """Confident mistakes (wrong, by descending confidence) or, without confidences, the lowest item scores."""
    rows = []
    if all("confidence" in p for p in predictions):
        wrong = [i for i, (e, p) in enumerate(zip(examples, predictions)) if p["prediction"] != e.target]
        wrong.sort(key=lambda i: -predictions[i]["confidence"])
        for i in wrong[:top]:
            p = predictions[i]
            rows.append({"where": examples[i].where, "input": examples[i].text, "reference": examples[i].target,
                         "prediction": p["prediction"], "confidence": p["confidence"],
                         "reference_probability": p.get("probabilities", {}).get(examples[i].target)})
        return rows
    if item is None:
        return rows
    for i in sorted(range(len(examples)), key=lambda i: item[i])[:top]:
        score = item[i]
        rows.append({"where": examples[i].where, "input": examples[i].text, "reference": examples[i].target,
                     "prediction": _shown(predictions[i]), "score": score[0] if isinstance(score, tuple) else score})
    return rows


def informative_order(items: dict[str, list[float]]) -> list[str]:
    """The per-item metrics, those that tell items apart first (most distinct values; ties keep the task's order).

    Why: ranking an extraction's items by ``json_valid`` lists items that score 1.000 while every field is
    wrong; field F1 (many values) then exact match (two) says which items are worst.
    """
    present = [m for m, v in items.items() if v]
    return sorted(present, key=lambda m: -len(set(items[m])))


def ranked_scores(items: dict[str, list[float]], order: list[str]) -> list[tuple[float, ...]] | None:
    """One sort key per item: its scores in ``order`` (the lowest tuple is the worst item)."""
    if not order:
        return None
    n = len(items[order[0]])
    order = [m for m in order if len(items[m]) == n]  # a task may keep per-item lists of other lengths (pairs)
    return [tuple(items[m][i] for m in order) for i in range(n)]


def _slice_rows(keys: list[str], item: list[float]) -> list[dict[str, Any]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for key, value in zip(keys, item):
        groups[key].append(value)
    rows = []
    for key in sorted(groups):
        values = groups[key]
        lo, hi = bootstrap_ci(values, n=500)
        rows.append({"slice": key, "n": len(values), "score": float(np.mean(values)), "ci": [lo, hi]})
    return rows


def length_buckets(texts: list[str]) -> list[str]:
    """Quartile buckets of input length in characters, named by their range (``"12-30 chars"``)."""
    lengths = np.array([len(t) for t in texts])
    edges = np.unique(np.quantile(lengths, [0, 0.25, 0.5, 0.75, 1.0]).round().astype(int))
    if len(edges) < 2:
        return [f"{edges[0]} chars"] * len(texts)
    which = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    names = [f"{edges[b]}-{edges[b + 1]} chars" for b in range(len(edges) - 1)]
    return [names[b] for b in which]


def slices(examples: list[Example], item: list[float], fields: dict[str, list[Any]],
           by_label: bool) -> dict[str, list[dict[str, Any]]]:
    """Mean item score per slice: ``label`` (when ``by_label``), ``input_length`` and each named field."""
    out: dict[str, list[dict[str, Any]]] = {}
    if by_label:
        out["label"] = _slice_rows([str(e.target) for e in examples], item)
    out["input_length"] = _slice_rows(length_buckets([e.text for e in examples]), item)
    for name, values in fields.items():
        out[name] = _slice_rows(["(missing)" if v is None else str(v) for v in values], item)
    return out


def analyse(task: Task, examples: list[Example], predictions: list[dict[str, Any]],
            fields: dict[str, list[Any]] | None = None, top: int = 10) -> dict[str, Any]:
    """The error analysis of one model's predictions on the test items, as plain JSON-able numbers."""
    items = task.item_scores(examples, predictions)
    metric = next((m for m in task.per_item_metrics if items.get(m)), None)
    item = items.get(metric) if metric else None
    ranking = informative_order(items)
    out: dict[str, Any] = {"metric": metric, "ranked_by": ranking,
                           "worst": worst_items(examples, predictions, ranked_scores(items, ranking), top)}
    if task.predicts_labels:
        scores = task.score(examples, predictions)
        out["confusion_pairs"] = confusion_pairs(scores["confusion_matrix"], top)
        out["calibration"] = calibration([p["prediction"] == e.target for e, p in zip(examples, predictions)],
                                         [p["confidence"] for p in predictions])
    if item is not None:
        out["slices"] = slices(examples, item, fields or {}, by_label=task.predicts_labels)
    return out


def analysis_markdown(analysis: dict[str, Any]) -> str:
    """The analysis as Markdown sections, appended to report.md."""
    md = ["", "## Error analysis (tuned model)", ""]
    if analysis.get("calibration"):
        md.append(f"Expected calibration error: {analysis['calibration']['ece']:.4f} (10 bins).")
    if analysis.get("confusion_pairs"):
        md += ["", "Most frequent confusions:", "", "| true | predicted | count |", "|---|---|---|"]
        md += [f"| {p['true']} | {p['predicted']} | {p['count']} |" for p in analysis["confusion_pairs"]]
    for name, rows in analysis.get("slices", {}).items():
        md += ["", f"{analysis['metric']} by {name}:", "", "| slice | n | score | 95% CI |", "|---|---|---|---|"]
        md += [f"| {r['slice']} | {r['n']} | {r['score']:.4f} | [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] |" for r in rows]
    if analysis.get("worst"):
        title = "Most confident mistakes" if "confidence" in analysis["worst"][0] else worst_title(analysis)
        md += ["", f"{title}:", ""]
        first = (analysis.get("ranked_by") or ["score"])[0]
        for w in analysis["worst"]:
            how = f"confidence {w['confidence']:.3f}" if "confidence" in w else f"{first} {w['score']:.3f}"
            md.append(f"- `{w['where']}` {w['input']!r}: reference `{w['reference']}`, "
                      f"predicted `{w['prediction']}` ({how})")
    return "\n".join(md) + "\n"


def worst_title(analysis: dict[str, Any]) -> str:
    """``Lowest-scoring items (by field_f1, then exact_match)``: the ranking said out loud."""
    order = analysis.get("ranked_by") or []
    return "Lowest-scoring items" + (f" (by {', then '.join(order)})" if order else "")
