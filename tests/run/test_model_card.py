"""MODEL_CARD.md states what the run measured: data sizes, intervals, worst classes, real failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from deploy_fixtures import cls_run, quiet  # noqa: F401  (fixtures)
from tuneforge.run.folder import RunDir
from tuneforge.run.model_card import failures, render_model_card, worst_slices, write_model_card


def test_every_finished_run_writes_its_card(cls_run: Path) -> None:
    card = (cls_run / "MODEL_CARD.md").read_text()
    for section in ("## Base model", "## Intended use", "## Data", "## Method and hyperparameters", "## Evaluation",
                    "## Known limitations", "## Environment"):
        assert section in card
    fps = json.loads((cls_run / "data" / "fingerprints.json").read_text())
    for split, info in fps["splits"].items():
        assert f"| {split} | {info['rows']} |" in card
    report = json.loads((cls_run / "report.json").read_text())
    lo, hi = report["intervals"]["accuracy"]["tuned"]
    assert f"[{lo:.4f}, {hi:.4f}]" in card
    assert "licence is **unknown to tuneforge**" in card  # a local folder, not a registry model
    assert "lr=0.003" in card and "`pos`" in card and "torch:" in card


def test_registry_model_names_its_licence(cls_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"] = "minilm-l6"
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert "licence: **Apache-2.0**" in render_model_card(run)


def test_failure_examples_are_the_items_the_model_got_wrong(cls_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    preds = [json.loads(x) for x in (run / "predictions" / "tuned.jsonl").read_text().splitlines()]
    tests = [json.loads(x) for x in (run / "data" / "test.jsonl").read_text().splitlines()]
    for p, t in zip(preds, tests):  # make every prediction right, then plant one error at item 2
        p["prediction"] = t["fields"]["label"]
    preds[2]["prediction"] = "neg" if tests[2]["fields"]["label"] == "pos" else "pos"
    (run / "predictions" / "tuned.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    found = failures(RunDir(run), yaml.safe_load((run / "recipe.yaml").read_text()))
    assert [f["input"] for f in found] == [tests[2]["fields"]["text"]]
    card = write_model_card(run).read_text()
    assert tests[2]["fields"]["text"] in card and tests[0]["fields"]["text"] not in card


def test_worst_slices_are_the_lowest_f1_classes() -> None:
    report = {"tuned": {"per_class": {"a": {"f1": 0.9, "support": 5}, "b": {"f1": 0.2, "support": 5},
                                      "c": {"f1": 0.5, "support": 5}, "d": {"f1": 0.0, "support": 0}}}}
    assert [name for name, _, _ in worst_slices(report)] == ["b", "c", "a"]  # no-support classes are left out
