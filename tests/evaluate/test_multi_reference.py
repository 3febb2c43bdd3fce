"""Scoring against several references per item: each metric equals its reference implementation's multi-reference
rule (sacrebleu's streams, rouge-score's ``score_multi``, NLTK's METEOR, bert-score's best-F1), and the report
and the generation task use every reference a row gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from conftest import write_jsonl
from tuneforge.data.readers import Record
from tuneforge.errors import DataError
from tuneforge.evaluate.metrics import alternatives, bleu, chrf, reference_streams, rouge_l
from tuneforge.evaluate.metrics_text import bertscore_items, meteor, rouge
from tuneforge.evaluate.report import build_report
from tuneforge.models.loading import load_tokenizer
from tuneforge.recipe import recipe_from_dict
from tuneforge.tasks import Example, Task, get_task

REFS = [["the cat sat on the mat", "a cat was sitting on the mat"],
        ["it rains in the city today", "today the city gets rain", "rain falls on the town"],
        ["Cocum is a cheap coffee shop"]]
PREDS = ["a cat was sitting on a mat", "the town gets rain today", "Cocum is a coffee shop with low prices"]


def test_streams_pad_items_with_fewer_references() -> None:
    assert reference_streams([["a", "b"], "c"]) == [["a", "c"], ["b", None]]
    with pytest.raises(ValueError, match="non-empty list"):
        alternatives([])


def test_bleu_and_chrf_use_every_reference_as_sacrebleu_does() -> None:
    streams = [[r[0] for r in REFS], [r[1] if len(r) > 1 else None for r in REFS],
               [r[2] if len(r) > 2 else None for r in REFS]]
    assert bleu(REFS, PREDS)["score"] == pytest.approx(BLEU().corpus_score(PREDS, streams).score)
    assert chrf(REFS, PREDS)["score"] == pytest.approx(CHRF().corpus_score(PREDS, streams).score)
    first_only = bleu([r[0] for r in REFS], PREDS)["score"]
    assert bleu(REFS, PREDS)["score"] > first_only  # the second references hold the predictions' n-grams
    assert bleu([["x y z w", "the very same words here"]], ["the very same words here"])["score"] == pytest.approx(100)


def test_rouge_and_meteor_take_the_best_reference() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL", "rouge1"], use_stemmer=True)
    best_l = [max(scorer.score(a, p)["rougeL"].fmeasure for a in r) for r, p in zip(REFS, PREDS)]
    assert rouge_l(REFS, PREDS) == pytest.approx(sum(best_l) / 3)
    best_1 = [scorer.score_multi(r, p)["rouge1"].fmeasure for r, p in zip(REFS, PREDS)]
    assert rouge(REFS, PREDS)["rouge1"] == pytest.approx(sum(best_1) / 3)
    singles = [max(meteor([a], [p])["score"] for a in r) for r, p in zip(REFS, PREDS)]
    assert meteor(REFS, PREDS)["score"] == pytest.approx(sum(singles) / 3)


def test_bertscore_keeps_the_reference_of_highest_f1(tiny_encoder: Path) -> None:
    got = bertscore_items(REFS[:2], PREDS[:2], encoder_path=str(tiny_encoder))
    for item, refs, pred in zip(got, REFS, PREDS):
        each = bertscore_items(refs, [pred] * len(refs), encoder_path=str(tiny_encoder))
        assert item == max(each, key=lambda s: s["f1"])


class TextTask:
    headline = ("exact",)
    per_item_metrics = ()

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"exact": 0.0}


def test_report_scores_selected_metrics_with_all_references() -> None:
    examples = [Example(where=f"t:{i}", text="x", target=r[0], references=r) for i, r in enumerate(REFS)]
    scored = {"scores": {"exact": 0.0}, "items": {}, "predictions": [{"prediction": p} for p in PREDS]}
    report = build_report(cast(Task, TextTask()), examples, None, scored, meta={}, samples=0,
                          metrics=["bleu", "rouge_l", "meteor", "chrf"])
    assert report["tuned"]["bleu"] == bleu(REFS, PREDS)["score"]
    assert report["tuned"]["rouge_l"] == rouge_l(REFS, PREDS)
    assert report["intervals"]["rouge_l"]["tuned"][1] <= 1.0


def test_generation_reads_references_and_scores_with_them(tiny_decoder: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "completion": "c"}])
    recipe = recipe_from_dict({"task": "generation", "model": "tiny", "data": {"train": str(train),
                               "references_field": "references"}})
    task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
    rows = [Record("dev.jsonl", i + 1, {"prompt": f"in {i}", "completion": r[0], "references": r})
            for i, r in enumerate(REFS)] + [Record("dev.jsonl", 9, {"prompt": "in", "completion": "only one"})]
    examples = task.parse(rows, "the test data")
    assert examples[1].references == REFS[1] and examples[1].target == REFS[1][0]
    assert examples[3].references is None  # a training row with one completion scores against it
    scores = task.score(examples[:3], [{"prediction": p} for p in PREDS])
    assert scores["bleu"] == bleu(REFS, PREDS)["score"] and scores["references_per_item"] == 2.0
    assert task.item_scores(examples[:1], [{"prediction": REFS[0][1]}])["rouge_l"] == [1.0]
    with pytest.raises(DataError, match="references_field"):
        task.parse([Record("dev.jsonl", 1, {"prompt": "p", "completion": "c", "references": "one string"})], "x")
