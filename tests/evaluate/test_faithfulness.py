"""The slot error rate of text generated from structured input: omissions and hallucinations counted by hand."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tuneforge.evaluate.faithfulness import (check_item, faithfulness, mentions, parse_slots, slot_error_rate,
                                             structured_inputs, vocabulary)
from tuneforge.evaluate.report import build_report, headline_table, render_markdown
from tuneforge.tasks import Example, Task

INPUTS = ["name[Cocum], eatType[coffee shop], food[English], priceRange[moderate], familyFriendly[no]",
          "name[The Mill], eatType[pub], food[Italian], area[riverside]",
          "name[Aromi], food[Italian], area[city centre]"]
GOOD = ["Cocum is a moderately priced coffee shop serving English food. It is not family friendly.",
        "The Mill is a pub by the riverside that serves Italian food.",
        "Aromi serves Italian food in the city centre."]
BAD = ["Cocum is a coffee shop serving Italian food.",          # omits English and moderate; says Italian
       "The Mill is a pub by the riverside that serves Italian food.",
       "Aromi is a coffee shop near the riverside."]  # omits Italian, city centre; says coffee shop, riverside


def test_parse_slots_reads_meaning_representations_and_json() -> None:
    assert parse_slots(INPUTS[1]) == {"name": "The Mill", "eatType": "pub", "food": "Italian", "area": "riverside"}
    assert parse_slots('Describe: {"brand": "Acme", "spec": {"size": 3}}') == {"brand": "Acme", "spec.size": "3"}
    assert parse_slots("a plain question") is None and structured_inputs(["x[y]", "free text"]) is None


def test_counts_equal_a_hand_count() -> None:
    slots = [s for s in (parse_slots(t) for t in INPUTS) if s is not None]
    good = faithfulness(slots, GOOD)
    assert (good["omitted"], good["hallucinated"], good["slot_error_rate"]) == (0, 0, 0.0)
    assert good["slots"] == 4 + 4 + 3 and good["unchecked"] == 1  # familyFriendly[no] cannot be checked by words
    bad = faithfulness(slots, BAD)
    assert bad["items"][0]["omitted"] == ["food[English]", "priceRange[moderate]"]
    assert bad["items"][0]["hallucinated"] == ["food[Italian]"]
    assert bad["items"][2]["omitted"] == ["food[Italian]", "area[city centre]"]
    assert bad["items"][2]["hallucinated"] == ["eatType[coffee shop]", "area[riverside]"]
    assert bad["omitted"] == 4 and bad["hallucinated"] == 3 and bad["items_with_errors"] == 2
    assert bad["slot_error_rate"] == pytest.approx(7 / 11)
    assert slot_error_rate(slots, BAD, vocabulary(slots)) == bad["slot_error_rate"]


def test_a_value_inside_the_inputs_own_value_is_not_a_hallucination() -> None:
    vocab = {"near": {"Plaza", "Crowne Plaza Hotel"}}
    item = check_item({"near": "Crowne Plaza Hotel"}, "It is near the Crowne Plaza Hotel.", vocab)
    assert item.hallucinated == [] and item.omitted == []
    assert mentions("3 out of 5", "rated 3 out of 5 stars") and not mentions("5 out of 5", "rated 1 out of 5")


class TextTask:
    headline = ("exact",)
    per_item_metrics = ()

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"exact": 0.0}


def scored(preds: list[str]) -> dict[str, Any]:
    return {"scores": {"exact": 0.0}, "items": {}, "predictions": [{"prediction": p} for p in preds]}


def test_report_states_the_slot_error_rate_of_both_models() -> None:
    examples = [Example(where=f"t:{i}", text=t, target=g) for i, (t, g) in enumerate(zip(INPUTS, GOOD))]
    report = build_report(cast(Task, TextTask()), examples, scored(BAD), scored(GOOD), meta={}, samples=0)
    assert report["base"]["slot_error_rate"] == pytest.approx(7 / 11) and report["tuned"]["slot_error_rate"] == 0
    assert report["delta"]["slot_error_rate"] == pytest.approx(-7 / 11)
    assert report["intervals"]["slot_error_rate"]["delta"][1] <= 0
    assert [r[0] for r in headline_table(report)][-1] == "slot_error_rate"
    assert "slot error rate" in render_markdown(report)
    free = [Example(where="t:0", text="say hello", target="hello")]
    assert "faithfulness" not in build_report(cast(Task, TextTask()), free, None, scored(["hi"]), meta={}, samples=0)
