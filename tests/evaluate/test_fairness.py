"""Group gaps against hand computation, term swaps, the counterfactual change rate, and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.evaluate.fairness import card_lines, counterfactual, group_gap, swap_terms, term_map
from tuneforge.tasks import Example, Task


def test_group_gap_equals_hand_computed_means_and_brackets_the_gap() -> None:
    items = [1, 1, 1, 0, 1, 0, 0, 0, 1, 0]
    groups = ["a", "a", "a", "a", "b", "b", "b", "b", "c", "c"]
    out = group_gap(items, groups)
    assert [(r["group"], r["n"], r["score"]) for r in out["groups"]] == [("a", 4, 0.75), ("b", 4, 0.25), ("c", 2, 0.5)]
    gap = out["largest_gap"]
    assert gap["groups"] == ["a", "b"] and gap["gap"] == pytest.approx(0.5)
    assert gap["ci"][0] <= 0.5 <= gap["ci"][1] and not gap["real"]  # four items a group: may be noise
    many = group_gap([1.0] * 200 + [0.0] * 200, ["x"] * 200 + ["y"] * 200)
    assert many["largest_gap"]["real"] and many["largest_gap"]["ci"] == [1.0, 1.0]
    assert "largest_gap" not in group_gap([1, 0], ["only", "only"])


def test_swap_keeps_case_and_whole_words() -> None:
    terms = term_map([("he", "she"), ("john", "mary")])
    assert swap_terms("HE said John, the hero, met Mary.", terms) == "SHE said Mary, the hero, met John."
    with pytest.raises(ValueError, match="two non-empty terms"):
        term_map([("he",)])


class RuleTask:
    """Predicts 'pos' when the text says 'he': a biased rule whose change rate is known."""

    per_item_metrics = ()

    def predict(self, model: Any, examples: list[Example]) -> list[dict[str, Any]]:
        return [{"prediction": "pos" if " he " in f" {e.text.lower()} " else "neg"} for e in examples]


def test_counterfactual_counts_changed_answers() -> None:
    texts = ["he is kind", "she is kind", "the lamp works", "his lamp", "john is here"]
    examples = [Example(where=f"t:{i}", text=t, target="pos") for i, t in enumerate(texts)]
    out = counterfactual(cast(Task, RuleTask()), None, examples, [("he", "she"), ("his", "her"), ("john", "mary")])
    # swapped: 4 inputs (not the lamp); changed: "he is kind" -> "she ..." and "she is kind" -> "he ..."
    assert (out["swapped"], out["changed"], out["change_rate"]) == (4, 2, 0.5)
    assert {x["input"] for x in out["examples"]} == {"he is kind", "she is kind"}
    assert "2" not in card_lines(None) and "not tested for bias" in card_lines(None)


def test_fairness_command_writes_results_and_the_model_card_states_them(tmp_path: Path, tiny_encoder: Path) -> None:
    rows = sentiment_rows(40)
    for i, r in enumerate(rows):
        r["text"] = ("he says " if i % 3 else "she says ") + r["text"]
        r["region"] = "north" if i % 2 else "south"
    recipe = base_recipe(tiny_encoder, "classification", write_jsonl(tmp_path / "train.jsonl", rows), tmp_path / "run",
                         epochs=1)
    recipe["eval"]["base"] = False
    run = api.train(recipe, echo=lambda *_: None).run_dir
    assert main(["fairness", str(run), "--slice-by", "region"]) == 0
    result = json.loads((run / "fairness.json").read_text())
    assert result["metric"] == "accuracy" and {g["group"] for g in result["groups"]["region"]["groups"]} <= {
        "north", "south"}
    cf = result["counterfactual"]
    assert cf["swapped"] == result["n_test"] and 0 <= cf["change_rate"] <= 1
    card = (run / "MODEL_CARD.md").read_text()
    assert "Bias checks (fairness.md)" in card and "not tested for bias" not in card
    assert np.isfinite(result["groups"]["region"]["groups"][0]["score"])
