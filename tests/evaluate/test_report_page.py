"""Error analysis finds planted problems; every run writes a self-contained report.html with its figures' numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.errors import ConfigError
from tuneforge.evaluate.errors_analysis import calibration, confusion_pairs, length_buckets, slices, worst_items
from tuneforge.tasks.base import Example


def test_calibration_equals_the_ece_formula() -> None:
    correct = [True, True, False, True, False, False]
    conf = [0.95, 0.85, 0.82, 0.55, 0.51, 1.0]
    cal = calibration(correct, conf)
    # bins hit: 0.9-1.0 {0.95 T, 1.0 F}, 0.8-0.9 {0.85 T, 0.82 F}, 0.5-0.6 {0.55 T, 0.51 F}
    expected = (2 / 6) * abs(0.5 - 0.975) + (2 / 6) * abs(0.5 - 0.835) + (2 / 6) * abs(0.5 - 0.53)
    assert cal["ece"] == pytest.approx(expected)
    assert sum(b["count"] for b in cal["bins"]) == 6
    assert calibration([True, True], [1.0, 1.0])["ece"] == 0.0


def test_confusion_pairs_rank_the_planted_confusion_first() -> None:
    cm = {"labels": ["a", "b", "c"], "matrix": [[5, 7, 0], [1, 9, 0], [0, 0, 4]]}
    pairs = confusion_pairs(cm)
    assert pairs[0] == {"true": "a", "predicted": "b", "count": 7}
    assert all(p["true"] != p["predicted"] for p in pairs) and len(pairs) == 2


def _ex(i: int, target: str, text: str = "x") -> Example:
    return Example(where=f"f:{i}", text=text, target=target)


def test_confident_mistakes_come_first_and_right_answers_never_appear() -> None:
    examples = [_ex(0, "a"), _ex(1, "a"), _ex(2, "b"), _ex(3, "b")]
    preds = [{"prediction": "a", "confidence": 0.99}, {"prediction": "b", "confidence": 0.6},
             {"prediction": "a", "confidence": 0.97}, {"prediction": "b", "confidence": 0.5}]
    worst = worst_items(examples, preds, None)
    assert [w["where"] for w in worst] == ["f:2", "f:1"]


def test_slices_expose_a_planted_weak_field_value_and_length_bucket() -> None:
    examples = [_ex(i, "a", text="y" * (5 if i < 10 else 50)) for i in range(20)]
    item = [0.0 if i < 10 else 1.0 for i in range(20)]
    source = ["web" if i < 10 else "app" for i in range(20)]
    out = slices(examples, item, {"source": source}, by_label=True)
    by_source = {r["slice"]: r["score"] for r in out["source"]}
    assert by_source == {"app": 1.0, "web": 0.0}
    lengths = {r["slice"]: r["score"] for r in out["input_length"]}
    assert min(lengths.values()) == 0.0 and max(lengths.values()) == 1.0
    assert out["label"][0]["n"] == 20
    assert len(set(length_buckets(["a", "bb", "ccc", "dddd", "eeeee"]))) >= 2


def test_every_run_writes_report_html_and_figure_numbers(tmp_path: Path, tiny_encoder: Path) -> None:
    rows = [{**r, "source": "web" if i % 3 else "app"} for i, r in enumerate(sentiment_rows(60))]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=2, lr=3e-3)
    recipe["eval"]["slice_by"] = ["source"]
    run = api.train(recipe, echo=lambda *_: None).run_dir
    report = json.loads((run / "report.json").read_text())
    figures = report["figures"]
    assert {"loss_curve", "confusion_matrix", "calibration"} <= set(figures)
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert figures["loss_curve"]["loss"] == [r["loss"] for r in logged if "event" not in r]
    assert {r["slice"] for r in report["analysis"]["slices"]["source"]} == {"web", "app"}
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<script" not in page and "http" not in page.split("<body>")[1]
    assert "Error analysis" in (run / "report.md").read_text()

    recipe["eval"]["slice_by"] = ["nope"]
    recipe["output"] = str(tmp_path / "run2")
    with pytest.raises(ConfigError, match="slice_by"):
        api.train(recipe, echo=lambda *_: None)
    assert not (tmp_path / "run2").exists()  # refused before anything was trained or written
