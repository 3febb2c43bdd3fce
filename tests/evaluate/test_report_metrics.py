"""Metrics selected by name (``eval.metrics``) join the report, for both models, with paired intervals."""

from __future__ import annotations

from pathlib import Path
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


def test_every_registered_metric_is_selectable_by_name() -> None:
    """No metric sits in the registry that a recipe cannot name: each registers with what it reads."""
    from tuneforge.evaluate.metrics import METRICS
    from tuneforge.recipe import recipe_from_dict

    names = METRICS.names()
    assert set(METRICS.configs()) == set(names) and {"roc_auc", "pr_auc", "mean_reciprocal_rank"} <= set(names)
    recipe = recipe_from_dict({"task": "classification", "model": "m", "data": {"train": "x.jsonl"},
                               "eval": {"metrics": names}}, check_files=False)
    assert recipe.eval.metrics == names


def test_probability_metrics_read_the_classifier_probabilities(tiny_encoder: Path) -> None:
    from tuneforge.evaluate.metrics_extra import pr_auc, roc_auc
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.tasks.base import get_task

    recipe = recipe_from_dict({"task": "classification", "model": str(tiny_encoder), "data": {"train": "x.jsonl"}},
                              check_files=False)
    task = get_task(recipe, load_tokenizer(tiny_encoder), "encoder")
    examples = [Example(where=f"t:{i}", text=f"x{i}", target="pos" if i % 2 else "neg") for i in range(20)]
    task.fit_schema(examples)

    def predictions(sharp: float) -> list[dict[str, Any]]:
        out = []
        for i, e in enumerate(examples):  # the tuned side ranks all but two items right
            p_pos = (0.5 + sharp if e.target == "pos" else 0.5 - sharp) if i not in (3, 4) else 0.5 - sharp
            out.append({"prediction": "pos" if p_pos > 0.5 else "neg", "confidence": max(p_pos, 1 - p_pos),
                        "probabilities": {"pos": p_pos, "neg": 1 - p_pos}})
        return out

    def scored_cls(preds: list[dict[str, Any]]) -> dict[str, Any]:
        return {"scores": task.score(examples, preds), "items": task.item_scores(examples, preds),
                "predictions": preds}

    tuned, base = predictions(0.3), [{**p, "probabilities": {"pos": 0.5, "neg": 0.5}} for p in predictions(0.3)]
    report = build_report(task, examples, scored_cls(base), scored_cls(tuned), meta={}, samples=0,
                          metrics=["roc_auc", "pr_auc", "chrf"])
    refs = [e.target for e in examples]
    rows = [[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in tuned]
    assert report["tuned"]["roc_auc"] == roc_auc(refs, rows, ["neg", "pos"])
    assert report["tuned"]["pr_auc"] == pr_auc(refs, rows, ["neg", "pos"])
    assert report["base"]["roc_auc"] == 0.5 and report["intervals"]["roc_auc"]["delta"][0] > 0
    assert "roc_auc" in report["metrics"] and "chrf" in report["tuned"]  # labels are text, so chrF scores too


def test_a_metric_the_predictions_cannot_feed_is_skipped_with_the_reason() -> None:
    examples = [Example(where="t:0", text="x", target="a")]
    report = build_report(cast(Task, TaskWithoutProbabilities()), examples, None, scored(examples, ["a"]), meta={},
                          samples=0, metrics=["roc_auc"])
    assert "roc_auc" not in report["tuned"] and "roc_auc: it reads probabilities" in report["metrics_skipped"]


class TaskWithoutProbabilities(TextTask):
    name = "text"

    def metric_inputs(self, reads: str, examples: list[Example], predictions: list[dict[str, Any]]) -> None:
        return None


def test_mean_reciprocal_rank_reads_a_reward_model_ranking(tiny_decoder: Path) -> None:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.tasks.base import get_task

    recipe = recipe_from_dict({"task": "reward_model", "model": str(tiny_decoder), "data": {"train": "x.jsonl"}},
                              check_files=False)
    task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
    examples = [Example(where=f"t:{i}", text="q", target=None) for i in range(3)]
    # rewards of each row's answers, best answer first: ranked first, second and third
    predictions = [{"prediction": [2.0, 1.0, 0.0]}, {"prediction": [1.0, 2.0, 0.0]}, {"prediction": [0.0, 1.0, 2.0]}]
    relevant, ranked = task.metric_inputs("rankings", examples, predictions)[0]
    assert ranked == [["0", "1", "2"], ["1", "0", "2"], ["2", "1", "0"]]
    from tuneforge.evaluate.metrics_extra import mean_reciprocal_rank
    assert mean_reciprocal_rank(relevant, ranked) == (1 + 1 / 2 + 1 / 3) / 3
    assert task.metric_inputs("probabilities", examples, predictions) is None
