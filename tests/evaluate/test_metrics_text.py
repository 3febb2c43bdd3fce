"""ROUGE, METEOR and BERTScore equal their reference implementations on fixed inputs (to 1e-6)."""

from __future__ import annotations

import pytest
from nltk.tokenize import wordpunct_tokenize
from nltk.translate.meteor_score import meteor_score as nltk_meteor
from rouge_score import rouge_scorer

from tuneforge.evaluate import METRICS
from tuneforge.evaluate.metrics_text import ROUGE_TYPES, _NoSynonyms, bertscore, meteor, rouge

REFS = ["the cat sat on the mat\nthe dog ran away", "police killed the gunman", "a quick brown fox", "hello world"]
PREDS = ["the dog ran away\nthe cat is on the mat", "the gunman was shot by police", "the fast brown fox jumps",
         "goodbye"]


def test_rouge_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    got = rouge(REFS, PREDS)
    for name in ROUGE_TYPES:
        expected = sum(scorer.score(r, p)[name].fmeasure for r, p in zip(REFS, PREDS)) / len(REFS)
        assert got[name] == pytest.approx(expected, abs=1e-6)
    assert got["rougeLsum"] != got["rougeL"]  # the newline-split summary variant really differs here


def test_meteor_matches_nltk_and_a_hand_computed_case():
    # ref "a b c d", hyp "a b x y": 2 matches in 1 chunk; P = R = 0.5, Fmean = PR / (0.9P + 0.1R) = 0.5,
    # penalty = 0.5 * (1/2)^3 = 0.0625, METEOR = 0.5 * (1 - 0.0625) = 0.46875.
    assert meteor(["a b c d"], ["a b x y"])["score"] == pytest.approx(0.46875, abs=1e-9)
    wordnet = meteor.__globals__["_wordnet"]()[0]
    expected = sum(nltk_meteor([wordpunct_tokenize(r)], wordpunct_tokenize(p), wordnet=wordnet)
                   for r, p in zip(REFS, PREDS)) / len(REFS)
    assert meteor(REFS, PREDS)["score"] == pytest.approx(expected, abs=1e-6)
    # Porter-stem matching works without WordNet: "jumps" matches "jumping"
    assert meteor(["jumping"], ["jumps"])["score"] > 0.4
    assert _NoSynonyms.synsets("dog") == []


def test_bertscore_matches_bert_score_package(tiny_encoder):
    bert_score = pytest.importorskip("bert_score")
    scorer = bert_score.BERTScorer(model_type=str(tiny_encoder), num_layers=2, device="cpu", batch_size=4)
    p, r, f = scorer.score(PREDS, REFS)
    got = METRICS.get("bertscore")(REFS, PREDS, encoder_path=str(tiny_encoder), layer=2)
    assert got["precision"] == pytest.approx(float(p.mean()), abs=1e-6)
    assert got["recall"] == pytest.approx(float(r.mean()), abs=1e-6)
    assert got["f1"] == pytest.approx(float(f.mean()), abs=1e-6)
    # a sentence scored against itself is a perfect match
    same = bertscore(["the cat sat"], ["the cat sat"], encoder_path=str(tiny_encoder))
    assert same["f1"] == pytest.approx(1.0, abs=1e-6)


def test_text_metrics_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="pair up"):
        rouge(["a"], ["a", "b"])
