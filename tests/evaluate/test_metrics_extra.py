"""The extra metrics equal their reference implementations (scikit-learn, the SQuAD script, scipy's tests)."""

from __future__ import annotations

import doctest
import re
import string
from collections import Counter

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from tuneforge.evaluate import metrics as M
from tuneforge.evaluate import metrics_extra as X

# --------------------------------------------------------------------------------------------------
# Classification with scores
# --------------------------------------------------------------------------------------------------


def _probabilities(n: int, k: int, seed: int, decimals: int | None = None) -> list[list[float]]:
    """Rows that sum to 1 (scikit-learn checks this for multi-class); rounding makes ties."""
    logits = np.random.default_rng(seed).normal(size=(n, k))  # (n, k)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:
        probs = np.round(probs, decimals)
        probs[:, -1] = 1.0 - probs[:, :-1].sum(axis=1)
    return probs.tolist()


def _refs(n: int, labels: list[str], seed: int) -> list[str]:
    rng = np.random.default_rng(seed + 100)
    refs = list(labels) + [labels[i] for i in rng.integers(0, len(labels), size=n - len(labels))]
    return [refs[i] for i in rng.permutation(n)]  # every label present


SCORED_CASES = [
    (_refs(30, ["neg", "pos"], 0), _probabilities(30, 2, 0), ["neg", "pos"]),
    (_refs(30, ["neg", "pos"], 1), _probabilities(30, 2, 1, decimals=1), ["neg", "pos"]),  # many ties
    (_refs(40, ["a", "b", "c"], 2), _probabilities(40, 3, 2), ["a", "b", "c"]),
    (_refs(40, ["c", "a", "b"], 3), _probabilities(40, 3, 3, decimals=1), ["c", "a", "b"]),  # order, ties
    (_refs(60, ["w", "x", "y", "z"], 4), _probabilities(60, 4, 4), ["w", "x", "y", "z"]),
]


@pytest.mark.parametrize("refs, scores, labels", SCORED_CASES)
def test_roc_auc_matches_sklearn(refs, scores, labels):
    s = np.asarray(scores)
    if len(labels) == 2:
        expected = skm.roc_auc_score([r == labels[1] for r in refs], s[:, 1])
    else:
        order = np.argsort(labels)  # scikit-learn wants the labels sorted; permute the columns to match
        expected = skm.roc_auc_score(refs, s[:, order], multi_class="ovr", average="macro", labels=sorted(labels))
    assert X.roc_auc(refs, scores, labels) == pytest.approx(expected)


@pytest.mark.parametrize("refs, scores, labels", SCORED_CASES)
def test_pr_auc_matches_sklearn_average_precision(refs, scores, labels):
    s = np.asarray(scores)
    if len(labels) == 2:
        expected = skm.average_precision_score([r == labels[1] for r in refs], s[:, 1])
    else:
        expected = skm.average_precision_score(label_binarize(refs, classes=labels), s, average="macro")
    assert X.pr_auc(refs, scores, labels) == pytest.approx(expected)


def test_auc_extremes_and_unnormalised_scores():
    refs, labels = ["n", "p", "n", "p"], ["n", "p"]
    perfect = [[0.0, 0.1], [0.0, 0.9], [0.0, 0.2], [0.0, 0.8]]  # only the positive column matters
    assert X.roc_auc(refs, perfect, labels) == 1.0
    assert X.pr_auc(refs, perfect, labels) == 1.0
    inverted = [[0.0, -row[1]] for row in perfect]  # logits, not probabilities: fine
    assert X.roc_auc(refs, inverted, labels) == 0.0
    constant = [[0.5, 0.5]] * 4
    assert X.roc_auc(refs, constant, labels) == 0.5
    assert X.pr_auc(refs, constant, labels) == 0.5  # one threshold: precision = prevalence


def test_auc_refuses_a_single_class_and_bad_scores():
    labels = ["n", "p"]
    for fn in (X.roc_auc, X.pr_auc):
        with pytest.raises(ValueError, match=r"undefined: label\(s\) \['p'\] never occur"):
            fn(["n", "n"], [[0.6, 0.4], [0.3, 0.7]], labels)
        with pytest.raises(ValueError, match=r"\['c'\] never occur"):
            fn(["a", "b", "a"], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], ["a", "b", "c"])
        with pytest.raises(ValueError, match="not in labels"):
            fn(["n", "maybe"], [[0.6, 0.4], [0.3, 0.7]], labels)
        with pytest.raises(ValueError, match="one score per label"):
            fn(["n", "p"], [[0.6, 0.4], [0.7]], labels)
        with pytest.raises(ValueError, match="NaN"):
            fn(["n", "p"], [[0.6, 0.4], [0.3, float("nan")]], labels)
        with pytest.raises(ValueError, match="at least two labels"):
            fn(["n", "n"], [[1.0], [1.0]], ["n"])
        with pytest.raises(ValueError, match="duplicates"):
            fn(["n", "p"], [[0.6, 0.4], [0.3, 0.7]], ["n", "n"])


# --------------------------------------------------------------------------------------------------
# Classification with hard predictions
# --------------------------------------------------------------------------------------------------

CLASSIFICATION_CASES = [
    (["pos", "neg", "neg", "neu", "pos"], ["pos", "neg", "pos", "neu", "neu"], None),
    (["pos", "neg", "neu"], ["pos", "maybe", "neu"], None),  # a prediction outside the classes
    (["pos", "neg", "neu"], ["pos", "maybe", "neu"], ["neg", "neu", "pos"]),
    (["a", "b", "a", "b"], ["b", "a", "b", "a"], None),  # all wrong
    (["a", "a", "b", "c"], ["a", "a", "a", "a"], None),  # one class predicted
    (["a", "b", "c"], ["", "b", ""], None),
    (["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c", "d"]),  # a label with no support
    (["a", "b", "c", "a"], ["a", "c", "c", "b"], ["a", "b"]),  # labels leave some out
    (["x", "x", "x"], ["x", "x", "x"], ["x"]),  # one class everywhere
    (["a", "a"], ["b", "b"], ["b"]),  # the listed labels have no support
]


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn's, on the one-class case
@pytest.mark.parametrize("refs, preds, labels", CLASSIFICATION_CASES)
def test_matthews_corrcoef_matches_sklearn(refs, preds, labels):
    assert X.matthews_corrcoef(refs, preds) == pytest.approx(skm.matthews_corrcoef(refs, preds))


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("refs, preds, labels", CLASSIFICATION_CASES)
def test_precision_recall_f1_matches_sklearn(refs, preds, labels, average):
    p, r, f, _ = skm.precision_recall_fscore_support(refs, preds, labels=labels, average=average, zero_division=0)
    got = X.precision_recall_f1(refs, preds, labels, average=average)
    assert list(got) == ["precision", "recall", "f1"]
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))


@pytest.mark.parametrize("refs, preds, labels", CLASSIFICATION_CASES)
def test_micro_and_weighted_f1_match_sklearn(refs, preds, labels):
    for fn, average in [(X.micro_f1, "micro"), (X.weighted_f1, "weighted")]:
        expected = skm.f1_score(refs, preds, labels=labels, average=average, zero_division=0)
        assert fn(refs, preds, labels) == pytest.approx(expected)


def test_macro_average_agrees_with_existing_macro_f1():
    for refs, preds, labels in CLASSIFICATION_CASES:
        assert X.precision_recall_f1(refs, preds, labels)["f1"] == pytest.approx(M.macro_f1(refs, preds, labels))


def test_hard_prediction_metrics_fail_loudly():
    for fn in (X.matthews_corrcoef, X.precision_recall_f1, X.micro_f1, X.weighted_f1):
        with pytest.raises(ValueError, match="pair up"):
            fn(["a", "b"], ["a"])
        with pytest.raises(ValueError, match="empty"):
            fn([], [])
    with pytest.raises(ValueError, match="average must be"):
        X.precision_recall_f1(["a"], ["a"], average="samples")  # type: ignore[arg-type]
    for average in ("macro", "micro", "weighted"):
        with pytest.raises(ValueError, match="labels is empty"):
            X.precision_recall_f1(["a"], ["a"], labels=[], average=average)


# --------------------------------------------------------------------------------------------------
# Question answering
# --------------------------------------------------------------------------------------------------


def _squad_normalize_answer(s: str) -> str:
    """``normalize_answer`` from the official SQuAD v1.1/v2.0 evaluation script, verbatim in substance."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _squad_f1(gold: str, pred: str) -> float:
    """``compute_f1`` from the SQuAD v2.0 script."""
    gold_toks, pred_toks = _squad_normalize_answer(gold).split(), _squad_normalize_answer(pred).split()
    common = Counter(gold_toks) & Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return float(gold_toks == pred_toks)
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  an   apple, a pear & THE plum!  ", "apple pear plum"),
        ("U.S.A.", "usa"),
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ("rock-'n'-roll", "rocknroll"),
        ("A", ""),
        ("", ""),
        ("Café\tau lait", "café au lait"),  # non-ASCII letters kept; tab is whitespace
    ],
)
def test_normalise_answer_by_hand_and_against_squad(text, expected):
    assert X.normalise_answer(text) == expected
    assert X.normalise_answer(text) == _squad_normalize_answer(text)


QA_REFS = [["Paris", "Paris, France"], "1984", "the cat sat on the mat", "", ["Denver Broncos", "Broncos"], "a b c"]
QA_PREDS = ["paris!", "in 1984", "cat on mat sat", "", "The Denver Broncos.", "c c x"]


def test_qa_exact_match_and_token_f1_against_squad_script():
    refs = [[r] if isinstance(r, str) else r for r in QA_REFS]
    expected_em = np.mean(
        [max(_squad_normalize_answer(a) == _squad_normalize_answer(p) for a in r) for r, p in zip(refs, QA_PREDS)]
    )
    expected_f1 = np.mean([max(_squad_f1(a, p) for a in r) for r, p in zip(refs, QA_PREDS)])
    assert X.qa_exact_match(QA_REFS, QA_PREDS) == pytest.approx(expected_em)
    assert X.token_f1(QA_REFS, QA_PREDS) == pytest.approx(expected_f1)
    assert X.qa_exact_match(QA_REFS, QA_PREDS) == pytest.approx(3 / 6)  # Paris, empty, Broncos


def test_token_f1_by_hand():
    assert X.token_f1(["cat on mat"], ["cat mat dog"]) == pytest.approx(2 / 3)  # P = R = 2/3
    assert X.token_f1(["b c d"], ["c c x"]) == pytest.approx(1 / 3)  # multiset overlap 1: P = R = 1/3
    assert X.token_f1(["a b c"], ["c c x"]) == pytest.approx(0.4)  # "a" is an article: P = 1/3, R = 1/2
    assert X.token_f1(["x"], ["y"]) == 0.0
    assert X.token_f1([""], [""]) == 1.0  # no answer, correctly
    assert X.token_f1(["the"], ["an"]) == 1.0  # both normalise to no answer
    assert X.token_f1(["x"], [""]) == 0.0
    assert X.token_f1([["x", "y z"]], ["y"]) == pytest.approx(2 / 3)  # best over answers


def test_qa_metrics_fail_loudly():
    for fn in (X.qa_exact_match, X.token_f1):
        with pytest.raises(ValueError, match="pair up"):
            fn(["a", "b"], ["a"])
        with pytest.raises(ValueError, match="empty"):
            fn([], [])
        with pytest.raises(ValueError, match="no acceptable answers"):
            fn([[]], ["a"])


# --------------------------------------------------------------------------------------------------
# Ranking and retrieval
# --------------------------------------------------------------------------------------------------


def test_mean_reciprocal_rank_and_recall_at_k_by_hand():
    relevant = [{"d2"}, ["d9"], {"d1", "d3"}, {"d4", "d5"}]
    ranked = [["d1", "d2", "d3"], ["d1", "d2"], ["d3", "d1"], ["d6", "d7", "d5", "d5"]]
    assert X.mean_reciprocal_rank(relevant, ranked) == pytest.approx((1 / 2 + 0 + 1 + 1 / 3) / 4)
    assert X.recall_at_k(relevant, ranked, k=1) == pytest.approx((0 + 0 + 1 / 2 + 0) / 4)
    assert X.recall_at_k(relevant, ranked, k=2) == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert X.recall_at_k(relevant, ranked, k=4) == pytest.approx((1 + 0 + 1 + 1 / 2) / 4)  # repeat counts once
    assert X.recall_at_k(relevant, ranked, k=100) == X.recall_at_k(relevant, ranked, k=4)


def test_ranking_with_one_relevant_item_matches_sklearn():
    """With one relevant item per query, MRR is sklearn's label ranking average precision and recall@k
    its top-k accuracy, when every candidate is ranked."""
    items = ["d0", "d1", "d2", "d3", "d4"]
    rng = np.random.default_rng(0)
    ranked = [[items[i] for i in rng.permutation(len(items))] for _ in range(12)]
    relevant = [{items[i]} for i in rng.integers(0, len(items), size=12)]
    y_true = np.array([[item in rel for item in items] for rel in relevant], dtype=int)  # (Q, D)
    y_score = np.array([[len(items) - r.index(item) for item in items] for r in ranked], dtype=float)  # (Q, D)
    assert X.mean_reciprocal_rank(relevant, ranked) == pytest.approx(
        skm.label_ranking_average_precision_score(y_true, y_score)
    )
    labels = [items.index(next(iter(rel))) for rel in relevant]
    for k in (1, 2, 3):
        expected = skm.top_k_accuracy_score(labels, y_score, k=k, labels=range(len(items)))
        assert X.recall_at_k(relevant, ranked, k) == pytest.approx(expected)


def test_ranking_metrics_fail_loudly():
    with pytest.raises(ValueError, match="pair up"):
        X.mean_reciprocal_rank([{"a"}], [])
    with pytest.raises(ValueError, match="empty"):
        X.recall_at_k([], [], k=1)
    with pytest.raises(ValueError, match=r"queries \[1\] have no relevant items"):
        X.mean_reciprocal_rank([{"a"}, set()], [["a"], ["b"]])
    with pytest.raises(ValueError, match="k must be at least 1"):
        X.recall_at_k([{"a"}], [["a"]], k=0)


# --------------------------------------------------------------------------------------------------
# Significance
# --------------------------------------------------------------------------------------------------


def _pairs(b: int, c: int, both_right: int = 5, both_wrong: int = 3) -> tuple[list[bool], list[bool]]:
    """Correctness lists with ``b`` items only A got right and ``c`` only B got right."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return a, bb


@pytest.mark.parametrize("b, c", [(0, 0), (3, 0), (1, 7), (5, 5), (12, 12), (10, 14), (2, 20)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    got = X.mcnemar(*_pairs(b, c))
    expected = stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    assert (got["b"], got["c"], got["method"]) == (b, c, "exact")
    assert got["statistic"] == min(b, c)
    assert got["p_value"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("b, c", [(10, 15), (13, 12), (5, 40), (100, 130), (60, 60)])
def test_mcnemar_chi2_matches_the_corrected_formula(b, c):
    got = X.mcnemar(*_pairs(b, c))
    statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c)  # statsmodels: (|b - c| - 1)^2 / (b + c), unfloored
    assert (got["b"], got["c"], got["method"]) == (b, c, "chi2")
    assert got["statistic"] == pytest.approx(statistic)
    assert got["p_value"] == pytest.approx(stats.chi2.sf(statistic, df=1), rel=1e-9)
    if b == c:
        assert (got["statistic"], got["p_value"]) == (0.0, 1.0)


def test_mcnemar_is_symmetric_and_fails_loudly():
    a, b = _pairs(4, 9)
    ab, ba = X.mcnemar(a, b), X.mcnemar(b, a)
    assert (ab["b"], ab["c"]) == (ba["c"], ba["b"]) and ab["p_value"] == ba["p_value"]
    with pytest.raises(ValueError, match="pair up"):
        X.mcnemar([True], [True, False])
    with pytest.raises(ValueError, match="empty"):
        X.mcnemar([], [])


def test_paired_bootstrap_is_deterministic_and_consistent():
    rng = np.random.default_rng(7)
    a = rng.random(150).tolist()
    b = (np.asarray(a) + rng.normal(0.05, 0.2, size=150)).tolist()
    got = X.paired_bootstrap(a, b)
    assert got == X.paired_bootstrap(a, b)
    assert got != X.paired_bootstrap(a, b, seed=1)
    assert list(got) == ["mean_diff", "ci_low", "ci_high", "share_b_better", "p_value"]
    diffs = [y - x for x, y in zip(a, b)]
    assert got["mean_diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert (got["ci_low"], got["ci_high"]) == M.bootstrap_ci(diffs)  # same resamples as the existing helper
    other = X.paired_bootstrap(a, b, n=500, seed=3, alpha=0.1)
    assert (other["ci_low"], other["ci_high"]) == M.bootstrap_ci(diffs, n=500, seed=3, alpha=0.1)
    assert got["ci_low"] < got["mean_diff"] < got["ci_high"]
    assert 0.0 <= got["share_b_better"] <= 1.0 and 0.0 < got["p_value"] <= 1.0

    swapped = X.paired_bootstrap(b, a)
    assert swapped["mean_diff"] == pytest.approx(-got["mean_diff"])
    assert swapped["p_value"] == pytest.approx(got["p_value"])
    assert swapped["share_b_better"] == pytest.approx(1.0 - got["share_b_better"])  # no exact ties here


def test_paired_bootstrap_p_value_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(11)
    a = rng.random(200)
    clear = X.paired_bootstrap(a.tolist(), (a + 0.1 + rng.normal(0, 0.05, size=200)).tolist())
    assert clear["p_value"] == pytest.approx(1 / 1001)  # no resample reaches the null
    assert clear["share_b_better"] == 1.0 and clear["ci_low"] > 0
    same = X.paired_bootstrap(a.tolist(), a.tolist())
    assert same == {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "share_b_better": 0.0, "p_value": 1.0}
    noise = X.paired_bootstrap(a.tolist(), (a + rng.normal(0, 0.2, size=200)).tolist())
    assert noise["p_value"] > 0.05 and noise["ci_low"] < 0 < noise["ci_high"]


def test_paired_bootstrap_fails_loudly():
    with pytest.raises(ValueError, match="pair up"):
        X.paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        X.paired_bootstrap([], [])
    with pytest.raises(ValueError, match="n must be"):
        X.paired_bootstrap([1.0], [1.0], n=0)
    with pytest.raises(ValueError, match="alpha"):
        X.paired_bootstrap([1.0], [1.0], alpha=1.0)


# --------------------------------------------------------------------------------------------------
# Registry and docstrings
# --------------------------------------------------------------------------------------------------


def test_registry_holds_the_extra_ref_pred_metrics():
    own = [name for name in M.METRICS.names() if M.METRICS.get(name).__module__ == X.__name__]
    assert own == sorted(
        [
            "matthews_corrcoef",
            "mean_reciprocal_rank",
            "micro_f1",
            "pr_auc",
            "qa_exact_match",
            "roc_auc",
            "token_f1",
            "weighted_f1",
        ]
    )
    assert X.METRICS is M.METRICS
    assert M.METRICS.get("roc_auc") is X.roc_auc
    for helper in ("recall_at_k", "mcnemar", "paired_bootstrap", "normalise_answer", "precision_recall_f1"):
        assert helper not in M.METRICS


def test_docstring_examples():
    result = doctest.testmod(X, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

