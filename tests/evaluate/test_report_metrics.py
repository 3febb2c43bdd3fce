"""Metrics selected by name (``eval.metrics``) join the report, for both models, with paired intervals."""

from __future__ import annotations

from typing import Any, cast

from tuneforge.evaluate.metrics import chrf
from tuneforge.evaluate.metrics_text import rouge_1
from tuneforge.evaluate.report import build_report, headline_table
from tuneforge.tasks.base import Example, Task


class TextTask:
    """The little of a task that a report reads."""

    headline = ("exact",)
    per_item_metrics = ("exact",)

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"exact": sum(e.target == p["prediction"] for e, p in zip(examples, predictions)) / len(examples)}


def scored(examples: list[Example], preds: list[Any]) -> dict[str, Any]:
    predictions = [{"prediction": p} for p in preds]
    items = [float(e.target == p) for e, p in zip(examples, preds)]
    return {"scores": TextTask().score(examples, predictions), "items": {"exact": items}, "predictions": predictions}


TASK = cast(Task, TextTask())
EXAMPLES = [Example(where=f"t:{i}", text=f"q{i}", target=f"the red mug number {i}") for i in range(12)]
TUNED = [f"the red mug number {i}" if i % 3 else f"red mug {i}" for i in range(12)]
BASE = [f"a cup {i}" for i in range(12)]


def test_selected_metrics_are_scored_on_base_and_tuned() -> None:
    report = build_report(TASK, EXAMPLES, scored(EXAMPLES, BASE), scored(EXAMPLES, TUNED), meta={}, samples=0,
                          metrics=["rouge_1", "chrf"])
    refs = [e.target for e in EXAMPLES]
    assert report["metrics"] == ["rouge_1", "chrf"]
    assert report["tuned"]["rouge_1"] == rouge_1(refs, TUNED) and report["base"]["chrf"] == chrf(refs, BASE)["score"]
    assert report["delta"]["rouge_1"] > 0
    per_item, corpus = report["intervals"]["rouge_1"], report["intervals"]["chrf"]  # paired either way
    assert per_item["significant"] and per_item["delta"][0] > 0 and corpus["delta"][0] > 0
    assert [row[0] for row in headline_table(report)][1:] == ["exact", "rouge_1", "chrf"]


def test_metrics_are_skipped_when_predictions_are_not_text() -> None:
    examples = [Example(where="t:0", text="x", target={"a": 1})]
    report = build_report(TASK, examples, None, scored(examples, [{"a": 1}]), meta={}, samples=0, metrics=["chrf"])
    assert "chrf" not in report["tuned"] and "not text" in report["metrics_skipped"]
