"""The report's answer to "was fine-tuning worth it?": paired intervals against each baseline and one verdict."""

from __future__ import annotations

from types import SimpleNamespace

from tuneforge.evaluate.report import baseline_comparison, baseline_table, verdict


class Labels:
    per_item_metrics = ("accuracy",)

    def item_scores(self, examples: list, predictions: list) -> dict[str, list[float]]:
        return {"accuracy": [float(e.target == p["prediction"]) for e, p in zip(examples, predictions)]}


def system(predictions: list[str]) -> SimpleNamespace:
    return SimpleNamespace(items=list(range(len(predictions))), description="d",
                           predictions=[{"prediction": p} for p in predictions])


def compare(tuned: list[str], **baselines: list[str]) -> dict:
    examples = [SimpleNamespace(target="a") for _ in tuned]
    items = {"accuracy": [float(p == "a") for p in tuned]}
    return baseline_comparison(Labels(), examples, {"items": items},
                               {name: (system(p), 1.0) for name, p in baselines.items()})


def test_a_fine_tune_right_where_both_baselines_are_wrong_beats_both() -> None:
    out = compare(["a"] * 60, knn=["a"] * 30 + ["b"] * 30, tfidf=["b"] * 60)
    assert out["verdict"].startswith("fine-tuning beats both baselines")
    assert out["systems"]["knn"]["accuracy"] == 0.5 and out["systems"]["knn"]["delta"][0] > 0


def test_a_baseline_that_is_as_good_says_do_not_fine_tune() -> None:
    out = compare(["a"] * 30 + ["b"] * 30, knn=["b"] * 30 + ["a"] * 30, tfidf=["b"] * 60)
    assert "a baseline is as good: do not fine-tune" in out["verdict"] and "knn" in out["verdict"]


def test_a_better_baseline_is_named() -> None:
    out = compare(["b"] * 60, knn=["a"] * 60)
    assert out["verdict"].startswith("a baseline is better: do not fine-tune (knn 1.000")


def test_the_table_lists_each_baseline_with_its_paired_interval() -> None:
    rows = baseline_table({"baselines": compare(["a"] * 40, knn=["b"] * 40, tfidf=["a"] * 40)})
    assert [r[0] for r in rows] == ["system", "knn", "tfidf"]
    assert rows[1][-2].endswith("real") and rows[2][-2].endswith("not significant")
    assert verdict("accuracy", {}) == "no baseline was scored"
