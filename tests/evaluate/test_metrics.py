"""Each metric equals its reference implementation (scikit-learn, rouge-score, sacrebleu) on small fixed inputs."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn import metrics as skm

from tuneforge.errors import ConfigError
from tuneforge.evaluate import metrics as M

# (refs, preds, labels) cases covering the edges: an unseen predicted label, all wrong, a label never
# predicted, an empty-string prediction, and an explicit label set that leaves a prediction out.
CLASSIFICATION_CASES = [
    (["pos", "neg", "neg", "neu", "pos"], ["pos", "neg", "pos", "neu", "neu"], None),
    (["pos", "neg", "neu"], ["pos", "maybe", "neu"], None),
    (["pos", "neg", "neu"], ["pos", "maybe", "neu"], ["neg", "neu", "pos"]),
    (["a", "b", "a", "b"], ["b", "a", "b", "a"], None),
    (["a", "a", "b", "c"], ["a", "a", "a", "a"], None),
    (["a", "b", "c"], ["", "b", ""], None),
    (["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c", "d"]),
]


@pytest.mark.parametrize("refs, preds, labels", CLASSIFICATION_CASES)
def test_accuracy_matches_sklearn(refs, preds, labels):
    assert M.accuracy(refs, preds) == pytest.approx(skm.accuracy_score(refs, preds))


@pytest.mark.parametrize("refs, preds, labels", CLASSIFICATION_CASES)
def test_macro_f1_matches_sklearn(refs, preds, labels):
    expected = skm.f1_score(refs, preds, labels=labels, average="macro", zero_division=0)
    assert M.macro_f1(refs, preds, labels) == pytest.approx(expected)


@pytest.mark.parametrize("refs, preds, labels", CLASSIFICATION_CASES)
def test_per_class_matches_sklearn(refs, preds, labels):
    got = M.per_class(refs, preds, labels)
    names = labels if labels is not None else sorted(set(refs) | set(preds))
    p, r, f, s = skm.precision_recall_fscore_support(refs, preds, labels=names, zero_division=0)
    assert list(got) == names
    for i, name in enumerate(names):
        assert got[name]["precision"] == pytest.approx(p[i])
        assert got[name]["recall"] == pytest.approx(r[i])
        assert got[name]["f1"] == pytest.approx(f[i])
        assert got[name]["support"] == s[i]


@pytest.mark.parametrize("refs, preds, labels", CLASSIFICATION_CASES)
def test_confusion_matrix_matches_sklearn_and_counts_everything(refs, preds, labels):
    got = M.confusion_matrix(refs, preds, labels)
    expected = skm.confusion_matrix(refs, preds, labels=got["labels"])
    assert got["matrix"] == expected.tolist()
    assert sum(map(sum, got["matrix"])) == len(refs)
    if labels is not None:
        assert got["labels"][: len(labels)] == labels


def test_confusion_matrix_appends_unseen_prediction_as_its_own_label():
    got = M.confusion_matrix(["a", "b", "b"], ["a", "zzz", "b"], labels=["b", "a"])
    assert got == {"labels": ["b", "a", "zzz"], "matrix": [[1, 0, 1], [0, 1, 0], [0, 0, 0]]}


def test_unseen_prediction_lowers_macro_f1_when_label_set_is_given():
    refs, preds = ["a", "b"], ["a", "other"]
    assert M.macro_f1(refs, preds, labels=["a", "b"]) == pytest.approx(0.5)
    assert M.macro_f1(refs, preds) == pytest.approx(1 / 3)  # "other" joins the label set with F1 0


@pytest.mark.parametrize("fn", [M.accuracy, M.macro_f1, M.per_class, M.confusion_matrix, M.rouge_l, M.bleu])
def test_mismatched_or_empty_inputs_fail_loudly(fn):
    with pytest.raises(ValueError, match="pair up"):
        fn(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


def test_normalise_record_rules():
    got = M.normalise_record(
        {
            "name": "  Ada\n LOVELACE ",
            "price": "24.99",
            "qty": 3,
            "flag": True,
            "tags": ["B", "a", "a"],
            "addr": {"city": "Paris", "zip": None},
            "note": None,
            "money": "$5",
        }
    )
    assert got == {
        "name": ("str", "ada lovelace"),
        "price": ("num", 24.99),
        "qty": ("num", 3.0),
        "flag": ("bool", True),
        "tags": ("list", (("str", "a"), ("str", "a"), ("str", "b"))),
        "addr.city": ("str", "paris"),
        "money": ("str", "$5"),
    }


@pytest.mark.parametrize(
    "ref, pred, same",
    [
        ({"price": 24.99}, {"price": "24.99"}, True),  # numeric string == number
        ({"n": 3}, {"n": 3.0}, True),
        ({"n": 3}, {"n": " 3 "}, True),
        ({"n": 1}, {"n": True}, False),  # a bool is not a number
        ({"n": "1,000"}, {"n": 1000}, False),  # only plain decimal strings count as numbers
        ({"s": "New  York"}, {"s": "new york"}, True),
        ({"l": ["x", "Y", "x"]}, {"l": ["y", "x", "x"]}, True),  # multiset: order ignored
        ({"l": ["x", "x", "y"]}, {"l": ["x", "y"]}, False),  # ... repeats are not
        ({"a": {"b": 1}}, {"a.b": 1}, True),  # nested flattened to dotted keys
        ({"a": 1, "b": None}, {"a": 1}, True),  # null == missing
        ({"a": 1}, {"a": 1, "b": None}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),  # extra non-null field in the prediction
        ({"a": 1, "b": 2}, {"a": 1}, False),
    ],
)
def test_exact_match_normalisation(ref, pred, same):
    assert M.exact_match([ref], [pred]) == (1.0 if same else 0.0)


def test_json_valid_and_exact_match_count_none_as_failure():
    refs = [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]
    preds = [{"a": 1}, None, {"a": "3"}, None]
    assert M.json_valid(refs, preds) == 0.5
    assert M.exact_match(refs, preds) == 0.5


def test_field_prf_counts_by_hand():
    refs = [
        {"name": "Ada", "price": 24.99, "city": "Paris"},
        {"name": "Bob", "price": 10, "city": None},
        {"name": "Cy", "price": 5},
    ]
    preds = [
        {"name": "ada", "price": "24.99", "city": "London"},  # 2 TP; city wrong: 1 FP + 1 FN
        {"name": "Bob", "extra": "x"},  # 1 TP; extra: 1 FP; price missing: 1 FN
        None,  # unparsed: 2 FN
    ]
    tp, fp, fn = 3, 2, 4
    got = M.field_prf(refs, preds)
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    assert got["recall"] == pytest.approx(tp / (tp + fn))
    assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert M.field_f1(refs, preds) == got["f1"]
    assert list(got["per_field"]) == ["city", "extra", "name", "price"]
    assert got["per_field"]["city"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert got["per_field"]["extra"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert got["per_field"]["name"]["precision"] == 1.0
    assert got["per_field"]["name"]["recall"] == pytest.approx(2 / 3)
    assert got["per_field"]["name"]["support"] == 3
    assert got["per_field"]["price"]["recall"] == pytest.approx(1 / 3)


def test_field_prf_equals_sklearn_on_binarised_pairs():
    """Micro P/R/F1 over (field, value) pairs is sklearn's micro average over a multilabel indicator,
    with a wrong value being a predicted pair that is absent plus a true pair that is missed."""
    refs = [{"a": 1, "b": "x"}, {"a": 2, "c": [1, 2]}, {"b": "y"}, {"a": None}]
    preds = [{"a": "1", "b": "X "}, {"a": 3, "c": [2, 1]}, None, {"d": 0}]
    norm_refs = [set(M.normalise_record(r).items()) for r in refs]
    norm_preds = [set(M.normalise_record(p or {}).items()) for p in preds]
    vocab = sorted(set().union(*norm_refs, *norm_preds), key=repr)
    y_true = np.array([[pair in s for pair in vocab] for s in norm_refs], dtype=int)
    y_pred = np.array([[pair in s for pair in vocab] for s in norm_preds], dtype=int)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    got = M.field_prf(refs, preds)
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))


def test_field_prf_all_none_and_all_empty_are_zero():
    assert M.field_prf([{"a": 1}], [None])["f1"] == 0.0
    got = M.field_prf([{"a": None}], [{}])
    assert (got["precision"], got["recall"], got["f1"], got["per_field"]) == (0.0, 0.0, 0.0, {})


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------

GEN_REFS = ["The cat sat on the mat.", "A quick brown fox jumps.", "Hello world", "Nothing matches here"]
GEN_PREDS = ["the cats are sitting on a mat", "A quick brown fox jumped over.", "", "zzz qqq"]


def test_rouge_l_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = np.mean([scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(GEN_REFS, GEN_PREDS)])
    got = M.rouge_l(GEN_REFS, GEN_PREDS)
    assert got == pytest.approx(expected)
    assert 0.0 < got < 1.0
    assert M.rouge_l(["same text"], ["same text"]) == pytest.approx(1.0)
    assert M.rouge_l(["some text"], [""]) == 0.0


def test_bleu_and_chrf_match_sacrebleu():
    expected_bleu = sacrebleu.metrics.BLEU()
    score = expected_bleu.corpus_score(GEN_PREDS, [GEN_REFS]).score
    got = M.bleu(GEN_REFS, GEN_PREDS)
    assert got["score"] == pytest.approx(score)
    assert got["signature"] == str(expected_bleu.get_signature())
    assert got["signature"].startswith("nrefs:1|")

    expected_chrf = sacrebleu.metrics.CHRF()
    got = M.chrf(GEN_REFS, GEN_PREDS)
    assert got["score"] == pytest.approx(expected_chrf.corpus_score(GEN_PREDS, [GEN_REFS]).score)
    assert got["signature"] == str(expected_chrf.get_signature())
    assert M.bleu(["all empty"], [""])["score"] == 0.0


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def test_perplexity():
    assert M.perplexity(10.0, 5) == pytest.approx(math.exp(2.0))
    assert M.perplexity(0.0, 3) == 1.0
    with pytest.raises(ValueError, match="n_tokens=0"):
        M.perplexity(1.0, 0)


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    rng = np.random.default_rng(123)
    scores = rng.random(200).tolist()
    low, high = M.bootstrap_ci(scores)
    assert (low, high) == M.bootstrap_ci(scores)
    assert low < float(np.mean(scores)) < high
    assert high - low < 0.2
    assert M.bootstrap_ci(scores, seed=1) != (low, high)
    narrow = M.bootstrap_ci(scores, alpha=0.5)
    assert low < narrow[0] < narrow[1] < high
    assert M.bootstrap_ci([0.5]) == (0.5, 0.5)
    with pytest.raises(ValueError):
        M.bootstrap_ci([])
    with pytest.raises(ValueError):
        M.bootstrap_ci(scores, alpha=0.0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1, "b": [1, 2]}\n```', {"a": 1, "b": [1, 2]}),
        ('Here you go:\n```\n{"a": "x"}\n```\nAnything else?', {"a": "x"}),
        ('{"a": 1} and then some trailing text {"b": 2}', {"a": 1}),
        (
            'Answer: {"a": "brace } inside \\" string", "n": {"m": 2}} done',
            {"a": 'brace } inside " string', "n": {"m": 2}},
        ),
        ('{not json} but then {"a": 1}', {"a": 1}),
        ('{"a": {"b": 1}, oops}', None),  # the outer span fails; its inner object is a fragment, not the answer
        ('{"a": 1, "b": {"c": 2}', None),  # truncated generation
        ("[1, 2, 3]", None),
        ("no json here", None),
        ("", None),
        ('{"text": "line one\nline two"}', {"text": "line one\nline two"}),  # raw newline inside a string
    ],
)
def test_parse_json_object(text, expected):
    assert M.parse_json_object(text) == expected


# --------------------------------------------------------------------------------------------------
# Registry and docstrings
# --------------------------------------------------------------------------------------------------


def test_registry_holds_every_ref_pred_metric():
    # Only this module's own: other modules (metrics_extra, plug-ins) register into the same registry.
    own = [name for name in M.METRICS.names() if M.METRICS.get(name).__module__ == M.__name__]
    assert own == sorted(
        [
            "accuracy",
            "bleu",
            "chrf",
            "macro_f1",
            "rouge_l",
        ]
    )
    assert M.METRICS.get("macro_f1") is M.macro_f1
    for helper in ("per_class", "confusion_matrix", "json_valid", "exact_match", "field_prf", "field_f1"):
        assert helper not in M.METRICS  # the tasks report them always; a recipe has nothing to select
    with pytest.raises(ConfigError, match="known: accuracy"):
        M.METRICS.get("acuracy")


def test_docstring_examples():
    result = doctest.testmod(M, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
