"""Metrics as small pure functions: references first, predictions second, a number (or a small dict) out.

Every metric registered in ``METRICS`` registers with a ``TextMetric`` that says what it reads
(``@METRICS.register("chrf", config=TextMetric(value="score"))``), so a recipe can select any of them for
the report by name (``eval.metrics: [rouge_1, chrf, bertscore]``, ``[roc_auc]``) and a typo fails with the
list of valid names. The functions a task always reports (accuracy tables, the extraction scores) and the
helpers with other signatures (``perplexity``, ``bootstrap_ci``, ``parse_json_object``) are plain functions
that the tasks call.

Each metric is either a thin wrapper over the field's reference implementation (rouge-score, sacrebleu)
or written out here and tested to equal it (scikit-learn for the classification metrics), so a number
in a tuneforge report means what the same number means in a paper.

Inputs are checked: ``refs`` and ``preds`` must have the same, non-zero length; anything else is a bug
upstream and raises ``ValueError`` rather than quietly scoring 0.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.registry import Registry

METRICS: Registry[Callable[..., Any]] = Registry("metric")


@dataclass(frozen=True)
class TextMetric:
    """How a report uses a metric of ``(reference texts, predicted texts)``: the config it registers with.

    ``value``: the key of the number to report when the metric returns a dict (``"score"`` for chrF).
    ``per_item``: the metric is the mean of one value per item (ROUGE, token F1), so the report bootstraps
    those values, paired between base and tuned; otherwise it recomputes the metric on resampled test sets.
    ``reads``: what the metric scores. ``"text"``: reference and predicted texts, which every task with text
    answers has. Anything else (``"probabilities"``: each item's per-label probabilities, for ROC and PR
    curves; ``"rankings"``: relevant items and a predicted order) is asked of the task
    (``Task.metric_inputs``), which gives it where its predictions hold it.
    """

    value: str | None = None
    per_item: bool = False
    reads: str = "text"


def check_pairs(refs: Sequence[object], preds: Sequence[object]) -> int:
    if len(refs) != len(preds):
        raise ValueError(f"{len(refs)} references but {len(preds)} predictions: they must pair up one to one")
    if not refs:
        raise ValueError("no examples to score: refs and preds are empty")
    return len(refs)


def f1_score(tp: int, fp: int, fn: int) -> float:
    """F1 as 2TP / (2TP + FP + FN); 0 when the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def ratio(num: int, denom: int) -> float:
    return num / denom if denom else 0.0


# --------------------------------------------------------------------------------------------------
# Classification: refs and preds are label strings.
# --------------------------------------------------------------------------------------------------


def _label_set(refs: Sequence[str], preds: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return sorted(set(refs) | set(preds))
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {list(labels)}")
    return list(labels)


@METRICS.register("accuracy", config=TextMetric(per_item=True))
def accuracy(refs: list[str], preds: list[str]) -> float:
    """Share of predictions equal to their reference (exact string match).

    >>> accuracy(["a", "b", "b"], ["a", "b", "a"])
    0.6666666666666666
    """
    n = check_pairs(refs, preds)
    return sum(r == p for r, p in zip(refs, preds)) / n


def per_class(refs: list[str], preds: list[str], labels: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support (number of references) for each label.

    For label ``l``: TP = ref and pred both ``l``; FP = pred ``l``, ref not; FN = ref ``l``, pred not.
    A prediction outside ``labels`` is a false negative for its reference's label and a false positive
    for no listed label, as in scikit-learn's ``precision_recall_fscore_support(labels=...)``.
    A ratio with a zero denominator is 0 (``zero_division=0``). ``labels`` defaults to the sorted union
    of the labels seen in ``refs`` and ``preds``.

    >>> per_class(["a", "b"], ["a", "a"])["a"]
    {'precision': 0.5, 'recall': 1.0, 'f1': 0.6666666666666666, 'support': 1}
    """
    check_pairs(refs, preds)
    tp: Counter[str] = Counter(r for r, p in zip(refs, preds) if r == p)
    n_true = Counter(refs)
    n_pred = Counter(preds)
    out: dict[str, dict[str, float]] = {}
    for label in _label_set(refs, preds, labels):
        t, fp, fn = tp[label], n_pred[label] - tp[label], n_true[label] - tp[label]
        out[label] = {
            "precision": ratio(t, t + fp),
            "recall": ratio(t, t + fn),
            "f1": f1_score(t, fp, fn),
            "support": n_true[label],
        }
    return out


@METRICS.register("macro_f1", config=TextMetric())
def macro_f1(refs: list[str], preds: list[str], labels: list[str] | None = None) -> float:
    """Unweighted mean of per-label F1 over ``labels`` (default: sorted union of refs and preds).

    Why macro: on imbalanced classes accuracy rewards always predicting the majority class; macro F1
    weighs every class the same. Equals ``sklearn.metrics.f1_score(average="macro", zero_division=0)``.

    >>> macro_f1(["a", "a", "b"], ["a", "a", "a"])
    0.4
    """
    scores = per_class(refs, preds, labels)
    if not scores:
        raise ValueError("labels is empty: macro F1 needs at least one label")
    return sum(s["f1"] for s in scores.values()) / len(scores)


def confusion_matrix(refs: list[str], preds: list[str], labels: list[str] | None = None) -> dict[str, Any]:
    """Counts of (true label, predicted label): ``{"labels": [...], "matrix": [[int]]}``.

    Row ``i`` is the true label ``labels[i]``, column ``j`` the predicted label ``labels[j]``. Nothing is
    dropped: a label seen in ``refs`` or ``preds`` but missing from ``labels`` (typically a generated
    answer that is not one of the classes) is appended under its own name, sorted, after the given
    labels, so the matrix stays square and every example is counted exactly once.

    >>> confusion_matrix(["a", "b"], ["a", "maybe"], labels=["a", "b"])
    {'labels': ['a', 'b', 'maybe'], 'matrix': [[1, 0, 0], [0, 0, 1], [0, 0, 0]]}
    """
    check_pairs(refs, preds)
    names = _label_set(refs, preds, labels)
    names += sorted((set(refs) | set(preds)) - set(names))
    index = {name: i for i, name in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for r, p in zip(refs, preds):
        matrix[index[r]][index[p]] += 1
    return {"labels": names, "matrix": matrix}


# --------------------------------------------------------------------------------------------------
# Extraction: refs are dicts, preds are dicts or None (the model output was not a JSON object).
# --------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _normalise_value(value: Any) -> Hashable:
    """A hashable, canonical form of one JSON value, tagged by kind so that ``True`` never equals ``1``.

    Strings are casefolded with runs of whitespace collapsed to one space and ends stripped; a string
    that is then a plain decimal number (``"24.99"``, ``"-3"``, ``"1e3"``, not ``"$5"`` or ``"1,000"``)
    counts as that number, because models often quote numbers the schema leaves bare. Numbers compare
    as floats (``3 == 3.0``). Lists are multisets: order is ignored, repeats are not. Nested objects are
    flattened to dotted keys.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    if isinstance(value, str):
        text = " ".join(value.casefold().split())
        if _NUMBER.fullmatch(text):
            return ("num", float(text))
        return ("str", text)
    if isinstance(value, list):
        return ("list", tuple(sorted((_normalise_value(v) for v in value), key=repr)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(normalise_record(value).items(), key=repr)))
    if value is None:
        return ("null",)
    raise TypeError(f"not a JSON value: {value!r} ({type(value).__name__})")


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def normalise_record(record: dict[str, Any]) -> dict[str, Hashable]:
    """Flatten nested objects to dotted keys, drop null fields, normalise each value.

    Dropping nulls is what makes a null field and a missing field the same. Keys are kept as written.

    >>> normalise_record({"Name": "  Ada  LOVELACE ", "price": "24.99", "addr": {"city": None}})
    {'Name': ('str', 'ada lovelace'), 'price': ('num', 24.99)}
    """
    return {k: _normalise_value(v) for k, v in _flatten(record).items() if v is not None}


def json_valid(refs: list[dict[str, Any]], preds: list[dict[str, Any] | None]) -> float:
    """Share of predictions that parsed to a JSON object (``None`` marks one that did not).

    >>> json_valid([{}, {}], [{"a": 1}, None])
    0.5
    """
    n = check_pairs(refs, preds)
    return sum(p is not None for p in preds) / n


def exact_match(refs: list[dict[str, Any]], preds: list[dict[str, Any] | None]) -> float:
    """Share of predictions whose every field equals the reference's after ``normalise_record``.

    Compared over the union of both records' keys, a missing field being the same as a null one;
    so an extra non-null field in the prediction makes it wrong. An unparsed prediction is wrong.

    >>> exact_match([{"a": 1, "b": None}], [{"a": "1.0"}])
    1.0
    """
    n = check_pairs(refs, preds)
    hits = sum(p is not None and normalise_record(r) == normalise_record(p) for r, p in zip(refs, preds))
    return hits / n


def field_prf(refs: list[dict[str, Any]], preds: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Micro precision, recall and F1 over non-null (field, value) pairs, and the same per field.

    Why fields and not whole records: exact match gives no credit for nine fields right out of ten.
    Per record, a predicted field with the reference's value is a true positive; a predicted field
    with a wrong value is a false positive *and* a false negative; a predicted field the reference
    lacks is a false positive; a reference field the prediction lacks is a false negative. An
    unparsed prediction (``None``) predicts nothing. Values are compared after ``normalise_record``.
    ``per_field`` lists every field seen in either side; its ``support`` counts reference records with
    that field non-null. Ratios with a zero denominator are 0.

    >>> field_prf([{"a": 1, "b": "x"}], [{"a": 1, "b": "y"}])["f1"]
    0.5
    """
    check_pairs(refs, preds)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for ref, pred in zip(refs, preds):
        r, p = normalise_record(ref), normalise_record(pred or {})
        for field in r.keys() | p.keys():
            if field in r and field in p and r[field] == p[field]:
                tp[field] += 1
                continue
            if field in p:
                fp[field] += 1
            if field in r:
                fn[field] += 1
    per_field = {
        field: {
            "precision": ratio(tp[field], tp[field] + fp[field]),
            "recall": ratio(tp[field], tp[field] + fn[field]),
            "f1": f1_score(tp[field], fp[field], fn[field]),
            "support": tp[field] + fn[field],
        }
        for field in sorted(tp.keys() | fp.keys() | fn.keys())
    }
    t, f_p, f_n = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {
        "precision": ratio(t, t + f_p),
        "recall": ratio(t, t + f_n),
        "f1": f1_score(t, f_p, f_n),
        "per_field": per_field,
    }


def field_f1(refs: list[dict[str, Any]], preds: list[dict[str, Any] | None]) -> float:
    """The micro F1 of ``field_prf``, as one headline number."""
    return field_prf(refs, preds)["f1"]


# --------------------------------------------------------------------------------------------------
# Generation: refs and preds are free text. Wrappers over the reference implementations.
# --------------------------------------------------------------------------------------------------


References = Sequence[str | Sequence[str]]


def alternatives(ref: str | Sequence[str]) -> list[str]:
    """The references of one item as a list: a string is one reference, a list holds all of them.

    >>> alternatives("a"), alternatives(["a", "b"])
    (['a'], ['a', 'b'])
    """
    alts = [ref] if isinstance(ref, str) else list(ref)
    if not alts or not all(isinstance(a, str) for a in alts):
        raise ValueError(f"a reference must be a string or a non-empty list of strings, not {ref!r}")
    return alts


def reference_streams(refs: References) -> list[list[Any]]:
    """sacrebleu's layout of multi-reference data: stream ``k`` holds every item's ``k``-th reference,
    ``None`` where an item has fewer (sacrebleu ignores those, so items may have different counts)."""
    lists = [alternatives(r) for r in refs]
    width = max(len(alts) for alts in lists)
    return [[alts[k] if k < len(alts) else None for alts in lists] for k in range(width)]


@METRICS.register("rouge_l", config=TextMetric(per_item=True))
def rouge_l(refs: References, preds: list[str]) -> float:
    """Mean ROUGE-L F-measure (longest common subsequence; Lin, 2004), on a 0-1 scale.

    Computed by Google's ``rouge_score`` with the Porter stemmer, the setting most papers report.
    Its default tokenizer keeps only ASCII letters and digits, so non-Latin text scores 0; use
    ``chrf`` there. An item with several references scores against the best of them (``score_multi``),
    as the E2E challenge scored it.
    """
    from rouge_score import rouge_scorer

    check_pairs(refs, preds)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [max(scorer.score(a, p)["rougeL"].fmeasure for a in alternatives(r)) for r, p in zip(refs, preds)]
    return float(sum(scores) / len(scores))


@METRICS.register("bleu", config=TextMetric(value="score"))
def bleu(refs: References, preds: list[str]) -> dict[str, Any]:
    """Corpus BLEU (Papineni et al., 2002) on a 0-100 scale, with sacrebleu's signature.

    An item given as a list of references counts n-gram matches against all of them (clipped by the
    most any one reference holds) and takes the closest reference length, as multi-reference BLEU does.

    Why the signature: BLEU moves by points with tokenisation and smoothing, so a score is only
    comparable with another that has the same signature (Post, 2018, https://aclanthology.org/W18-6319).
    """
    from sacrebleu.metrics import BLEU

    check_pairs(refs, preds)
    metric = BLEU()
    return {"score": float(metric.corpus_score(preds, reference_streams(refs)).score),
            "signature": str(metric.get_signature())}


@METRICS.register("chrf", config=TextMetric(value="score"))
def chrf(refs: References, preds: list[str]) -> dict[str, Any]:
    """Corpus chrF (Popović, 2015; character n-gram F-score) on a 0-100 scale, with sacrebleu's signature.

    Works on any script and rewards partial word matches, so it suits morphologically rich languages
    better than BLEU. With several references per item, each item counts against its best one (sacrebleu).
    """
    from sacrebleu.metrics import CHRF

    check_pairs(refs, preds)
    metric = CHRF()
    return {"score": float(metric.corpus_score(preds, reference_streams(refs)).score),
            "signature": str(metric.get_signature())}


# --------------------------------------------------------------------------------------------------
# Helpers with other signatures (not registered).
# --------------------------------------------------------------------------------------------------


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token), with the NLL summed in nats over ``n_tokens``.

    Sum first, divide once: averaging per-batch perplexities weights short batches too much.

    >>> perplexity(0.0, 5)
    1.0
    """
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one scored token, got n_tokens={n_tokens}")
    return math.exp(total_nll / n_tokens)


def bootstrap_ci(
    per_item: list[float], *, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``per_item`` (Efron, 1979).

    Resamples the items with replacement ``n`` times and returns the ``alpha/2`` and ``1 - alpha/2``
    quantiles of the resampled means: with the default ``alpha`` a 95% interval. Why: on a test set
    of a few hundred examples, two runs a point apart are often within noise, and the interval shows
    it. Seeded, so the same scores always give the same interval.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    if not per_item:
        raise ValueError("bootstrap_ci needs at least one per-item score")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    scores = np.asarray(per_item, dtype=np.float64)  # (N,)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), size=(n, len(scores)))  # (n, N)
    means = scores[idx].mean(axis=1)  # (n,)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


_FENCE = re.compile(r"```[A-Za-z0-9_-]*[^\S\n]*\n?(.*?)```", re.DOTALL)


def _first_object(text: str) -> dict[str, Any] | None:
    """Scan for balanced ``{...}`` spans (braces inside JSON strings ignored); return the first that is a dict."""
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped, end = 0, False, False, -1
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end == -1:
            return None  # never closes: truncated output; an inner object would be a fragment
        try:
            value = json.loads(text[start : end + 1], strict=False)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", end + 1)  # skip past the span, never into it
    return None


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a model's output, or ``None`` when there is none.

    Lenient the way models need: the body of a Markdown code fence is tried first, then the whole
    text; inside it, the first balanced ``{...}`` span that ``json.loads`` accepts (control characters
    allowed inside strings) as an object wins, so leading prose and trailing text are ignored. A span
    that does not parse is skipped whole, never searched for an inner object, and an object that never
    closes (truncated generation) gives ``None``: a fragment of the answer is not the answer.

    >>> parse_json_object('Sure! ```json\\n{"a": 1}\\n``` Hope this helps.')
    {'a': 1}
    >>> parse_json_object("no json here") is None
    True
    """
    for candidate in [*(m.group(1) for m in _FENCE.finditer(text)), text]:
        found = _first_object(candidate)
        if found is not None:
            return found
    return None
