"""More metrics as small pure functions: scored classification, QA, retrieval, and significance tests.

Registered in the same ``METRICS`` registry as ``tuneforge.evaluate.metrics`` (importing this module
registers them), with the same conventions: references first, predictions (or scores, or rankings)
second, a number or a small dict out; mismatched or empty inputs raise ``ValueError``. Each metric is
written out here and tested to equal the field's reference implementation (scikit-learn, the official
SQuAD script, scipy's binomial and chi-square tests).

Registered, each selectable by name in ``eval.metrics``: ``roc_auc`` and ``pr_auc`` (they read the
classifier's probabilities), ``matthews_corrcoef``, ``micro_f1``, ``weighted_f1``, ``qa_exact_match``,
``token_f1``, ``mean_reciprocal_rank`` (it reads a reward model's ranking of each row's answers).
Not registered: ``precision_recall_f1`` (a dict of three, the helper behind the micro and weighted F1),
``recall_at_k`` (needs ``k``), and the two-system comparisons ``mcnemar`` and ``paired_bootstrap``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import numpy as np

from tuneforge.evaluate.metrics import METRICS, TextMetric, check_pairs, confusion_matrix, f1_score, per_class, ratio

Average = Literal["macro", "micro", "weighted"]

# --------------------------------------------------------------------------------------------------
# Classification with scores: refs are label strings, scores[i][k] is example i's score for labels[k].
# --------------------------------------------------------------------------------------------------


def _score_matrix(refs: Sequence[str], scores: Sequence[Sequence[float]], labels: Sequence[str]) -> np.ndarray:
    """Check the inputs of a ranking metric and return the scores as an ``(N, K)`` float array."""
    check_pairs(refs, scores)
    if len(labels) < 2:
        raise ValueError(f"need at least two labels to rank, got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {list(labels)}")
    unknown = sorted(set(refs) - set(labels))
    if unknown:
        raise ValueError(f"references {unknown} are not in labels {list(labels)}")
    widths = {len(row) for row in scores}
    if widths != {len(labels)}:
        raise ValueError(f"every score row needs one score per label ({len(labels)}), got row lengths {sorted(widths)}")
    matrix = np.asarray(scores, dtype=np.float64)  # (N, K)
    if not np.isfinite(matrix).all():
        raise ValueError("scores contain NaN or infinity")
    return matrix


def _one_vs_rest(refs: Sequence[str], labels: Sequence[str], what: str) -> list[np.ndarray]:
    """Binary targets ``refs == label`` for every label ranked: only ``labels[1]`` when binary, else all.

    Fails when a target is all one class: the area is then undefined (no positive or no negative to
    rank), and scikit-learn raises too.
    """
    ranked = [labels[1]] if len(labels) == 2 else list(labels)
    present = set(refs)
    missing = [label for label in labels if label not in present]
    if missing:
        raise ValueError(
            f"{what} is undefined: label(s) {missing} never occur in refs, so there is nothing to rank "
            "against; score on a test set where every label occurs, or drop the missing labels"
        )
    return [np.array([r == label for r in refs]) for label in ranked]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank (``scipy.stats.rankdata``'s default)."""
    order = np.argsort(x, kind="mergesort")  # (N,)
    sorted_x = x[order]
    starts_group = np.r_[True, sorted_x[1:] != sorted_x[:-1]]  # (N,) first element of each tie group
    starts = np.flatnonzero(starts_group)  # (G,)
    ends = np.r_[starts[1:], len(x)]  # (G,) exclusive
    ranks = np.empty(len(x))
    ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(starts_group) - 1]
    return ranks


def _binary_roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg): the chance a random positive outscores a random negative, ties 1/2."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    rank_sum = float(_average_ranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _binary_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, highest first (scikit-learn's definition)."""
    order = np.argsort(-s, kind="mergesort")  # (N,) best score first
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]  # (T,) one index per threshold
    tps = np.cumsum(y_sorted)[last_of_tie]  # (T,)
    precision = tps / (last_of_tie + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _macro_one_vs_rest(refs: list[str], scores: list[list[float]], labels: list[str], name: str,
                       binary: Callable[[np.ndarray, np.ndarray], float]) -> float:
    """``binary`` on the positive column (two labels) or averaged over one-vs-rest columns (more)."""
    matrix = _score_matrix(refs, scores, labels)
    targets = _one_vs_rest(refs, labels, name)
    columns = [1] if len(labels) == 2 else range(len(labels))
    return float(np.mean([binary(y, matrix[:, k]) for y, k in zip(targets, columns)]))


@METRICS.register("roc_auc", config=TextMetric(reads="probabilities"))
def roc_auc(refs: list[str], scores: list[list[float]], labels: list[str]) -> float:
    """Area under the ROC curve; macro one-vs-rest when there are more than two labels.

    ``scores[i][k]`` is example ``i``'s score (probability, logit: any monotone score) for ``labels[k]``.
    With two labels, ``labels[1]`` is the positive class and only its column is used. With more, each
    label's column is scored against "any other label" and the areas are averaged unweighted
    (Provost & Domingos, 2000; Fawcett, 2006, https://doi.org/10.1016/j.patrec.2005.10.010). Computed as the
    Mann-Whitney statistic, so it equals ``sklearn.metrics.roc_auc_score`` (``multi_class="ovr"``,
    ``average="macro"``); unlike scikit-learn, rows need not sum to 1. ``labels`` is required: it names
    the columns. A label that never occurs in ``refs`` raises ``ValueError``: its area is undefined.

    Why: accuracy scores one threshold; AUC scores the ranking, so it shows whether a model's
    confidence is useful before a threshold is chosen.

    >>> roc_auc(["no", "yes", "no", "yes"], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]], ["no", "yes"])
    0.75
    """
    return _macro_one_vs_rest(refs, scores, labels, "ROC AUC", _binary_roc_auc)


@METRICS.register("pr_auc", config=TextMetric(reads="probabilities"))
def pr_auc(refs: list[str], scores: list[list[float]], labels: list[str]) -> float:
    """Area under the precision-recall curve as average precision; macro one-vs-rest for > 2 labels.

    Average precision is ``sum_k (R_k - R_{k-1}) P_k`` over the score thresholds, highest first: the
    step-wise area, not the trapezoidal one, which is optimistic because precision does not interpolate
    linearly (Davis & Goadrich, 2006, https://doi.org/10.1145/1143844.1143874). Same ``scores`` and
    ``labels`` conventions as ``roc_auc``; equals ``sklearn.metrics.average_precision_score`` (on the
    positive column when binary, ``average="macro"`` over binarised labels otherwise).

    Why: on rare positives ROC AUC looks good while most flagged items are wrong; average precision
    falls with precision, so it is the one to watch on imbalanced data.

    >>> pr_auc(["no", "yes", "no", "yes"], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]], ["no", "yes"])
    0.8333333333333333
    """
    return _macro_one_vs_rest(refs, scores, labels, "PR AUC", _binary_average_precision)


# --------------------------------------------------------------------------------------------------
# Classification with hard predictions: refs and preds are label strings.
# --------------------------------------------------------------------------------------------------


@METRICS.register("matthews_corrcoef", config=TextMetric())
def matthews_corrcoef(refs: list[str], preds: list[str]) -> float:
    """Matthews correlation coefficient, multi-class (Gorodkin's R_K), in [-1, 1]; 0 is chance level.

    With C the confusion matrix over every label seen, t_k its row sums, p_k its column sums,
    c its trace and s the number of examples:
    ``MCC = (c s - sum_k t_k p_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))``, and 0 when the
    denominator is 0 (one class in refs or in preds), as ``sklearn.metrics.matthews_corrcoef``.
    Matthews (1975); Gorodkin (2004), https://doi.org/10.1016/j.compbiolchem.2004.09.006.

    Why: it uses all four cells of the binary confusion matrix, so a majority-class predictor scores 0
    however imbalanced the data (Chicco & Jurman, 2020).

    >>> matthews_corrcoef(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    0.5773502691896258
    """
    matrix = np.asarray(confusion_matrix(refs, preds)["matrix"], dtype=np.float64)  # (K, K) true x pred
    t, p = matrix.sum(axis=1), matrix.sum(axis=0)  # (K,), (K,)
    s, c = matrix.sum(), np.trace(matrix)
    denom = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom else 0.0


def precision_recall_f1(
    refs: list[str], preds: list[str], labels: list[str] | None = None, average: Average = "macro"
) -> dict[str, float]:
    """Precision, recall and F1 averaged over ``labels``: ``{"precision", "recall", "f1"}``.

    - ``"macro"``: unweighted mean of each label's value; every class counts the same.
    - ``"micro"``: from TP, FP, FN summed over ``labels``; with the default labels, precision, recall
      and F1 all equal accuracy.
    - ``"weighted"``: mean of each label's value weighted by its support (reference count); 0 when
      the labels have no support. Its F1 need not lie between its precision and recall.

    ``labels`` defaults to the sorted union of refs and preds; with explicit labels, predictions
    outside them count as false negatives only, and ratios with a zero denominator are 0. Equals
    ``sklearn.metrics.precision_recall_fscore_support(labels=labels, average=average, zero_division=0)``.

    >>> precision_recall_f1(["a", "a", "b"], ["a", "b", "b"], average="micro")
    {'precision': 0.6666666666666666, 'recall': 0.6666666666666666, 'f1': 0.6666666666666666}
    """
    if average not in ("macro", "micro", "weighted"):
        raise ValueError(f"average must be 'macro', 'micro' or 'weighted', got {average!r}")
    if average == "micro":
        return _micro_prf(refs, preds, labels)
    scores = per_class(refs, preds, labels)
    if not scores:
        raise ValueError("labels is empty: precision, recall and F1 need at least one label")
    if average == "macro":
        weights = {name: 1.0 for name in scores}
    else:
        weights = {name: float(s["support"]) for name, s in scores.items()}
    total = sum(weights.values())
    return {
        key: sum(weights[name] * s[key] for name, s in scores.items()) / total if total else 0.0
        for key in ("precision", "recall", "f1")
    }


def _micro_prf(refs: list[str], preds: list[str], labels: list[str] | None) -> dict[str, float]:
    """Micro P/R/F1 from the confusion matrix, restricted to ``labels`` (all labels seen by default)."""
    if labels is not None and not labels:
        raise ValueError("labels is empty: precision, recall and F1 need at least one label")
    cm = confusion_matrix(refs, preds, labels)
    matrix = np.asarray(cm["matrix"])  # (K, K) true x pred
    k = len(labels) if labels is not None else len(cm["labels"])  # the listed labels come first
    tp = int(np.trace(matrix[:k, :k]))
    fp = int(matrix[:, :k].sum()) - tp
    fn = int(matrix[:k, :].sum()) - tp
    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": f1_score(tp, fp, fn)}


@METRICS.register("micro_f1", config=TextMetric())
def micro_f1(refs: list[str], preds: list[str], labels: list[str] | None = None) -> float:
    """F1 from TP, FP and FN summed over ``labels``: ``precision_recall_f1(average="micro")["f1"]``.

    With the default labels this is accuracy; it differs when ``labels`` leaves some out.

    >>> micro_f1(["a", "a", "b"], ["a", "b", "b"])
    0.6666666666666666
    """
    return precision_recall_f1(refs, preds, labels, average="micro")["f1"]


@METRICS.register("weighted_f1", config=TextMetric())
def weighted_f1(refs: list[str], preds: list[str], labels: list[str] | None = None) -> float:
    """Per-label F1 weighted by support: ``precision_recall_f1(average="weighted")["f1"]``.

    >>> weighted_f1(["a", "a", "b"], ["a", "a", "a"])
    0.5333333333333333
    """
    return precision_recall_f1(refs, preds, labels, average="weighted")["f1"]


# --------------------------------------------------------------------------------------------------
# Question answering: refs are one answer or a list of acceptable answers, preds are strings.
# --------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalise_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop ASCII punctuation, drop a/an/the, collapse whitespace.

    The order and rules of ``normalize_answer`` in the official SQuAD evaluation script
    (Rajpurkar et al., 2016, https://arxiv.org/abs/1606.05250).

    >>> normalise_answer("  The Eiffel-Tower, in  Paris! ")
    'eiffeltower in paris'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answers(ref: str | Sequence[str]) -> list[str]:
    answers = [ref] if isinstance(ref, str) else list(ref)
    if not answers:
        raise ValueError('a reference has no acceptable answers; use [""] for "no answer"')
    return answers


def _token_f1(ref: str, pred: str) -> float:
    ref_tokens, pred_tokens = normalise_answer(ref).split(), normalise_answer(pred).split()
    if not ref_tokens or not pred_tokens:
        return float(ref_tokens == pred_tokens)  # SQuAD 2.0: "no answer" is right only against "no answer"
    same = sum((Counter(ref_tokens) & Counter(pred_tokens)).values())
    return f1_score(same, len(pred_tokens) - same, len(ref_tokens) - same)


@METRICS.register("qa_exact_match", config=TextMetric(per_item=True))
def qa_exact_match(refs: list[str | list[str]], preds: list[str]) -> float:
    """Share of predictions equal to some acceptable answer after ``normalise_answer`` (SQuAD EM, 0-1).

    A reference is one answer or a list of acceptable ones; the best match counts. Named apart from
    ``exact_match``, which compares extracted JSON records.

    >>> qa_exact_match([["Paris", "Paris, France"], "1984"], ["paris!", "in 1984"])
    0.5
    """
    n = check_pairs(refs, preds)
    return sum(max(normalise_answer(a) == normalise_answer(p) for a in _answers(r)) for r, p in zip(refs, preds)) / n


@METRICS.register("token_f1", config=TextMetric(per_item=True))
def token_f1(refs: list[str | list[str]], preds: list[str]) -> float:
    """Mean token-overlap F1 between prediction and best acceptable answer (SQuAD F1, 0-1).

    Tokens are the whitespace-split ``normalise_answer`` forms, counted as multisets. As in the
    SQuAD 2.0 script, an empty answer scores 1 against an empty reference and 0 against any other.

    >>> token_f1(["the cat sat"], ["a cat sat down"])
    0.8
    """
    n = check_pairs(refs, preds)
    return sum(max(_token_f1(a, p) for a in _answers(r)) for r, p in zip(refs, preds)) / n


# --------------------------------------------------------------------------------------------------
# Ranking and retrieval: relevant[i] is query i's relevant ids, ranked[i] the ids returned, best first.
# --------------------------------------------------------------------------------------------------


def _check_ranking(relevant: Sequence[Collection[str]], ranked: Sequence[Sequence[str]]) -> int:
    n = check_pairs(relevant, ranked)
    empty = [i for i, r in enumerate(relevant) if not r]
    if empty:
        raise ValueError(f"queries {empty[:10]} have no relevant items, so the metric is undefined; drop them")
    return n


@METRICS.register("mean_reciprocal_rank", config=TextMetric(reads="rankings"))
def mean_reciprocal_rank(relevant: list[set[str] | list[str]], ranked: list[list[str]]) -> float:
    """Mean over queries of 1 / (rank of the first relevant item), 0 when none is ranked (Voorhees, 1999).

    Ranks start at 1. A query with no relevant items raises ``ValueError``: its reciprocal rank is
    undefined, and scoring it 0 would blame the system for the data.

    >>> mean_reciprocal_rank([{"d2"}, {"d9"}], [["d1", "d2", "d3"], ["d1"]])
    0.25
    """
    n = _check_ranking(relevant, ranked)
    total = 0.0
    for rel, ids in zip(relevant, ranked):
        wanted = set(rel)
        total += next((1.0 / rank for rank, item in enumerate(ids, start=1) if item in wanted), 0.0)
    return total / n


def recall_at_k(relevant: list[set[str] | list[str]], ranked: list[list[str]], k: int) -> float:
    """Mean over queries of the share of relevant items found in the top ``k`` of the ranking.

    Not registered: it needs ``k``. A repeated id in the ranking counts once. A query with no relevant
    items raises ``ValueError``, as in ``mean_reciprocal_rank``.

    >>> recall_at_k([{"d1", "d2"}, {"d3"}], [["d1", "d4", "d2"], ["d5", "d3"]], k=2)
    0.75
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = _check_ranking(relevant, ranked)
    return sum(len(set(rel) & set(ids[:k])) / len(set(rel)) for rel, ids in zip(relevant, ranked)) / n


# --------------------------------------------------------------------------------------------------
# Significance: is system B really better than system A on the same test items? (Not registered.)
# --------------------------------------------------------------------------------------------------

_EXACT_BELOW = 25  # discordant pairs under which McNemar uses the exact binomial test


def mcnemar(correct_a: list[bool], correct_b: list[bool]) -> dict[str, Any]:
    """McNemar's test (1947) of two classifiers on the same items: do they err at the same rate?

    Only discordant items carry information: ``b`` = A right and B wrong, ``c`` = A wrong and B right.
    Under the null each discordant item is a fair coin, so:

    - ``b + c < 25``: exact two-sided binomial test, ``statistic = min(b, c)``,
      ``p = min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)])``;
    - otherwise: chi-square with 1 degree of freedom and Edwards' continuity correction,
      ``statistic = (max(|b - c| - 1, 0))^2 / (b + c)``.

    As ``statsmodels.stats.contingency_tables.mcnemar(table, exact=..., correction=True)``, except that
    the corrected ``|b - c| - 1`` is floored at 0 (statsmodels reports a small statistic when b = c).
    Not registered: it compares two systems. Returns ``{"b", "c", "statistic", "p_value", "method"}``
    with ``method`` ``"exact"`` or ``"chi2"``. Dietterich (1998) recommends it for comparing classifiers,
    https://doi.org/10.1162/089976698300017197.

    >>> mcnemar([True, True, True, False], [False, False, False, False])
    {'b': 3, 'c': 0, 'statistic': 0.0, 'p_value': 0.25, 'method': 'exact'}
    """
    check_pairs(correct_a, correct_b)
    b = sum(bool(x) and not bool(y) for x, y in zip(correct_a, correct_b))
    c = sum(bool(y) and not bool(x) for x, y in zip(correct_a, correct_b))
    n = b + c
    if n < _EXACT_BELOW:
        low = min(b, c)
        tail = sum(math.comb(n, i) for i in range(low + 1))  # exact integers: no rounding until the end
        return {"b": b, "c": c, "statistic": float(low), "p_value": min(1.0, 2 * tail / 2**n), "method": "exact"}
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    p_value = math.erfc(math.sqrt(statistic / 2))  # chi-square(1) survival function
    return {"b": b, "c": c, "statistic": statistic, "p_value": p_value, "method": "chi2"}


def paired_bootstrap(
    scores_a: list[float], scores_b: list[float], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Paired bootstrap comparison of two systems' per-item scores on the same items (Koehn, 2004).

    Resamples the items with replacement ``n`` times (the same items for both systems, which is what
    makes it paired) and returns:

    - ``mean_diff``: mean of ``b - a`` over the items as given;
    - ``ci_low``, ``ci_high``: the percentile ``1 - alpha`` interval of the resampled mean difference;
      equal to ``bootstrap_ci`` of the differences with the same ``n``, ``seed`` and ``alpha``;
    - ``share_b_better``: share of resamples where B's mean beats A's (Koehn's "B wins" rate);
    - ``p_value``: two-sided, from the resampled differences shifted to the null of no difference:
      ``(1 + #{|d* - d| >= |d|}) / (n + 1)`` (Efron & Tibshirani, 1993, ch. 16; the ``+1`` counts the
      observed sample, so p is never 0 from finitely many resamples).

    Not registered: it compares two systems. Seeded, so the same scores always give the same result.
    Koehn (2004), https://aclanthology.org/W04-3250.

    >>> result = paired_bootstrap([0.0, 0.5, 1.0, 0.0], [1.0, 1.0, 1.0, 0.5])
    >>> {key: round(value, 3) for key, value in result.items()}
    {'mean_diff': 0.5, 'ci_low': 0.125, 'ci_high': 0.875, 'share_b_better': 0.996, 'p_value': 0.006}
    """
    m = check_pairs(scores_a, scores_b)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    diffs = np.asarray(scores_b, dtype=np.float64) - np.asarray(scores_a, dtype=np.float64)  # (N,)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m, size=(n, m))  # (n, N): the same draw as bootstrap_ci
    resampled = diffs[idx].mean(axis=1)  # (n,)
    observed = float(diffs.mean())
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.sum(np.abs(resampled - observed) >= abs(observed)))
    return {
        "mean_diff": observed,
        "ci_low": float(low),
        "ci_high": float(high),
        "share_b_better": float(np.mean(resampled > 0)),
        "p_value": (1 + extreme) / (n + 1),
    }
