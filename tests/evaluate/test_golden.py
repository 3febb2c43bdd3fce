"""The regression gate: each golden check passes and fails when it should; eval reports it, export obeys it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.errors import ConfigError, UserError
from tuneforge.evaluate.golden import check_answer, gate
from tuneforge.recipe import GoldenCase, recipe_from_dict


def case(**kw) -> GoldenCase:
    return GoldenCase(input="x", **kw)


def test_each_check_passes_and_fails() -> None:
    assert check_answer(case(exact="pos"), " pos\n") == []
    assert check_answer(case(exact="pos"), "neg")
    assert check_answer(case(regex=r"\d{4}-\d{2}"), "on 2024-03") == []
    assert check_answer(case(regex=r"\d{4}-\d{2}"), "soon")
    schema = {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}
    assert check_answer(case(json_schema=schema), 'Here: {"price": 3.5}') == []
    assert "price" in check_answer(case(json_schema=schema), '{"price": "cheap"}')[0]
    assert check_answer(case(json_schema=schema), "no json")[0].startswith("json_schema")
    assert check_answer(case(must_contain=["Paris", "France"]), "paris is in france") == []
    assert check_answer(case(must_contain=["Paris", "Rome"]), "paris") == ["must_contain: 'Rome' missing"]
    assert check_answer(case(must_refuse=True), "I'm sorry, but I can't help with that.") == []
    assert check_answer(case(must_refuse=True), "Sure! Step one: ...")


def test_recipe_refuses_cases_without_checks_or_with_bad_patterns(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", sentiment_rows(10))
    raw = base_recipe(Path("m"), "classification", train, tmp_path / "r")
    for bad, message in [({"input": "x"}, "at least one"), ({"input": "x", "regex": "("}, "does not compile"),
                         ({"input": "x", "json_schema": {"type": "nope"}}, "not a valid JSON Schema")]:
        raw["eval"]["golden"] = [bad]
        with pytest.raises(ConfigError, match=message):
            recipe_from_dict(raw)


def test_gate_lists_what_the_tune_fixed_and_broke() -> None:
    tuned = [{"case": "a", "passed": True}, {"case": "b", "passed": False}, {"case": "c", "passed": True}]
    base = [{"case": "a", "passed": False}, {"case": "b", "passed": True}, {"case": "c", "passed": True}]
    result = gate(tuned, base)
    assert result["fixed"] == ["a"] and result["broken"] == ["b"] and not result["passed"]


def test_eval_reports_golden_cases_and_export_refuses_a_failing_model(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(80))
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=4, lr=3e-3)
    recipe["eval"]["golden"] = [{"name": "positive", "input": "the red lamp is great item 7", "exact": "pos"},
                                {"name": "planted failure", "input": "the red lamp is great item 9", "exact": "neg"}]
    run = api.train(recipe, echo=lambda *_: None).run_dir
    report = api.evaluate(run, echo=lambda *_: None)
    golden = report["golden"]
    assert [r["passed"] for r in golden["tuned"]] == [True, False]
    assert golden["tuned"][1]["answer"] == "pos" and not golden["passed"]
    assert "base" in golden and "fixed" in golden
    assert "Regression gate" in (run / "report.md").read_text()
    assert "planted failure" in (run / "report.html").read_text()
    assert json.loads((run / "report.json").read_text())["golden"]["n_passed"] == 1
    with pytest.raises(UserError, match="planted failure"):
        api.export(run, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    assert (api.export(run, tmp_path / "export", force=True) / "config.json").is_file()


def test_must_not_contain_fails_an_answer_that_states_a_banned_fact() -> None:
    banned = case(must_contain=["Cocum"], must_not_contain=["Italian", "family friendly"])
    assert check_answer(banned, "Cocum serves English food.") == []
    assert check_answer(banned, "Cocum serves italian food.") == ["must_not_contain: 'Italian' stated"]
