"""Extraction reports: invented values per field, and the worst items ranked by the metric that tells them apart."""

from __future__ import annotations

from types import SimpleNamespace

from tuneforge.evaluate.errors_analysis import informative_order, ranked_scores, worst_items
from tuneforge.tasks.extraction import invented_values, item_field_f1


def test_a_value_the_input_never_states_is_invented_per_field() -> None:
    texts = ["Hestia Home blue throw", "Acme red mug"]
    preds = [{"brand": "Hestia Home", "colour": "Blue"}, {"brand": "Zeta", "colour": None}]
    out = invented_values(texts, preds, ["brand", "colour"])
    assert out["invented_by_field"] == {"brand": 0.5, "colour": 0.0}
    assert out["invented_rate"] == 1 / 3


def test_lists_and_unparsed_predictions_count_value_by_value() -> None:
    out = invented_values(["play jazz and blues"], [{"genre": ["jazz", "rock"]}], ["genre"])
    assert out["invented_by_field"]["genre"] == 0.5
    assert invented_values(["x"], [None], ["genre"]) == {"invented_rate": 0.0, "invented_by_field": {}}


def test_item_field_f1_gives_full_credit_to_an_empty_record_predicted_empty() -> None:
    assert item_field_f1({"a": None}, {"a": None}) == 1.0
    assert item_field_f1({"a": "x", "b": "y"}, {"a": "x", "b": "z"}) == 0.5
    assert item_field_f1({"a": "x"}, None) == 0.0


def test_the_worst_items_rank_by_field_f1_then_exact_match_not_by_json_valid() -> None:
    items = {"json_valid": [1.0, 1.0, 1.0], "exact_match": [0.0, 0.0, 1.0], "field_f1": [0.8, 0.2, 1.0]}
    order = informative_order(items)
    assert order == ["field_f1", "exact_match", "json_valid"]
    examples = [SimpleNamespace(where=f"r{i}", text="t", target={}) for i in range(3)]
    worst = worst_items(examples, [{"prediction": {}} for _ in range(3)], ranked_scores(items, order), top=2)
    assert [w["where"] for w in worst] == ["r1", "r0"] and worst[0]["score"] == 0.2
