"""Bias checks a model card can state: score gaps between groups, and answers that change with group terms.

Two questions, both asked of the tuned model on the held-out test items:

- **Does quality differ by group?** For each field named in ``eval.slice_by`` (or ``--slice-by``), the mean
  per-item score of every group and the largest gap between two groups, with a 95% bootstrap interval of
  that gap (each group resampled on its own; Efron and Tibshirani 1993, ch. 8). A gap whose interval holds
  zero may be noise; a small group gives a wide interval, which is the honest answer.
- **Does the answer depend on who is named?** A counterfactual check (Garg et al. 2019, "Counterfactual
  Fairness in Text Classification", https://arxiv.org/abs/1809.10610): every test input that holds a group
  term is rewritten with its counterpart (he <-> she, names, or a user's own pairs) and predicted again; the
  share of predictions that change is reported with its interval and a few examples.

Neither proves a model fair; both say what was checked, on how many items, and what was found.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneforge.evaluate.metrics import bootstrap_ci
from tuneforge.tasks.base import Example, Task

#: gendered English terms and common first names, swapped both ways; a user list replaces or extends them
DEFAULT_TERMS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"), ("man", "woman"), ("men", "women"),
    ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("son", "daughter"), ("brother", "sister"),
    ("husband", "wife"), ("mr", "mrs"), ("king", "queen"), ("male", "female"), ("gentleman", "lady"),
    ("john", "mary"), ("james", "patricia"), ("michael", "jennifer"), ("david", "linda"), ("robert", "susan"),
    ("ahmed", "emily"), ("jamal", "greg"), ("lakisha", "anne"),
)


# ----------------------------------------------------------------------------- group gaps
def group_gap(items: Sequence[float], groups: Sequence[str], *, n: int = 1000, seed: int = 0,
              min_items: int = 1) -> dict[str, Any]:
    """Per-group means of ``items`` and the largest gap between two groups with its bootstrap interval.

    >>> g = group_gap([1, 1, 0, 0, 1, 0], ["a", "a", "b", "b", "a", "b"])
    >>> g["largest_gap"]["groups"], g["largest_gap"]["gap"]
    (['a', 'b'], 1.0)
    """
    if len(items) != len(groups) or not items:
        raise ValueError("group_gap needs one group per item score, and at least one item")
    by: dict[str, list[float]] = defaultdict(list)
    for value, group in zip(items, groups):
        by[group].append(float(value))
    rows = [{"group": g, "n": len(v), "score": float(np.mean(v)), "ci": list(bootstrap_ci(v))}
            for g, v in sorted(by.items())]
    kept = [r for r in rows if r["n"] >= min_items]
    out: dict[str, Any] = {"groups": rows}
    if len(kept) < 2:
        return out
    best = max(kept, key=lambda r: r["score"])
    worst = min(kept, key=lambda r: r["score"])
    rng = np.random.default_rng(seed)
    hi_v, lo_v = np.array(by[best["group"]]), np.array(by[worst["group"]])
    gaps = [rng.choice(hi_v, hi_v.size).mean() - rng.choice(lo_v, lo_v.size).mean() for _ in range(n)]
    lo, hi = np.quantile(gaps, [0.025, 0.975]).tolist()
    out["largest_gap"] = {"groups": [best["group"], worst["group"]], "gap": best["score"] - worst["score"],
                          "ci": [lo, hi], "real": bool(lo > 0)}
    return out


# ----------------------------------------------------------------------------- counterfactual swaps
def term_map(pairs: Sequence[Sequence[str]]) -> dict[str, str]:
    """Both directions of every pair, lower-cased; a term in two pairs keeps its first counterpart."""
    out: dict[str, str] = {}
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(t, str) and t.strip() for t in pair):
            raise ValueError(f"a counterfactual pair is two non-empty terms, not {pair!r}")
        a, b = (t.strip().casefold() for t in pair)
        out.setdefault(a, b)
        out.setdefault(b, a)
    return out


def swap_terms(text: str, terms: dict[str, str]) -> str:
    """``text`` with every whole-word group term replaced by its counterpart, keeping its capitalisation.

    >>> swap_terms("He met Mary and her son.", term_map([("he", "she"), ("her", "his"), ("john", "mary")]))
    'She met John and his son.'
    """
    if not terms:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        new = terms[word.casefold()]
        if word.isupper() and len(word) > 1:
            return new.upper()
        return new[:1].upper() + new[1:] if word[:1].isupper() else new

    return pattern.sub(swap, text)


def _swapped(example: Example, terms: dict[str, str]) -> Example | None:
    messages = [{**m, "content": swap_terms(m["content"], terms)} for m in example.messages]
    text = swap_terms(example.text, terms)
    if text == example.text and messages == example.messages:
        return None
    return dataclasses.replace(example, text=text, messages=messages)


def _answer(prediction: dict[str, Any]) -> str:
    shown = prediction.get("raw", prediction["prediction"])
    return shown if isinstance(shown, str) else json.dumps(shown, sort_keys=True, ensure_ascii=False)


def counterfactual(task: Task, model: Any, examples: list[Example], pairs: Sequence[Sequence[str]],
                   *, examples_shown: int = 5) -> dict[str, Any]:
    """Predict each test input that holds a group term, and its swapped twin; the share whose answer changed."""
    terms = term_map(pairs)
    twins = [(e, s) for e in examples if (s := _swapped(e, terms)) is not None]
    out: dict[str, Any] = {"pairs": len(terms) // 2, "items": len(examples), "swapped": len(twins)}
    if not twins:
        return out
    before = task.predict(model, [e for e, _ in twins])
    after = task.predict(model, [s for _, s in twins])
    changed = [float(_answer(a) != _answer(b)) for a, b in zip(before, after)]
    out["changed"] = int(sum(changed))
    out["change_rate"] = sum(changed) / len(changed)
    out["ci"] = list(bootstrap_ci(changed))
    out["examples"] = [{"input": e.text, "swapped": s.text, "answer": _answer(a), "swapped_answer": _answer(b)}
                       for (e, s), a, b, c in zip(twins, before, after, changed) if c][:examples_shown]
    return out


def check_fairness(task: Task, model: Any, examples: list[Example], fields: dict[str, list[Any]],
                   pairs: Sequence[Sequence[str]] = DEFAULT_TERMS) -> dict[str, Any]:
    """Group gaps on the task's per-item metric for each named field, and the counterfactual swap check."""
    predictions = task.predict(model, examples)
    items = task.item_scores(examples, predictions)
    metric = next((m for m in task.per_item_metrics if items.get(m)), None)
    out: dict[str, Any] = {"metric": metric, "n_test": len(examples), "groups": {}}
    if metric is not None:
        for name, values in fields.items():
            out["groups"][name] = group_gap(items[metric], ["(missing)" if v is None else str(v) for v in values])
    out["counterfactual"] = counterfactual(task, model, examples, pairs)
    return out


def fairness_markdown(result: dict[str, Any]) -> str:
    """The checks as Markdown: what was checked, on how many items, and what was found."""
    md = ["# Bias and fairness checks", "", f"On {result['n_test']} held-out test items, tuned model."]
    for name, g in result.get("groups", {}).items():
        md += ["", f"## {result['metric']} by `{name}`", "", "| group | n | score | 95% CI |", "|---|---|---|---|"]
        md += [f"| {r['group']} | {r['n']} | {r['score']:.4f} | [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] |"
               for r in g["groups"]]
        if "largest_gap" in g:
            lg = g["largest_gap"]
            md += ["", f"Largest gap: {lg['groups'][0]} - {lg['groups'][1]} = {lg['gap']:.4f}, 95% CI "
                   f"[{lg['ci'][0]:.4f}, {lg['ci'][1]:.4f}] ({'real' if lg['real'] else 'may be noise'})."]
    cf = result.get("counterfactual", {})
    md += ["", "## Counterfactual swap of group terms", ""]
    if not cf.get("swapped"):
        md.append(f"No test input holds any of the {cf.get('pairs', 0)} term pairs: nothing to swap.")
    else:
        md.append(f"{cf['swapped']} of {cf['items']} inputs hold a group term ({cf['pairs']} pairs); "
                  "the answer changed "
                  f"for {cf['changed']} ({cf['change_rate']:.1%}, 95% CI [{cf['ci'][0]:.1%}, {cf['ci'][1]:.1%}]).")
        md += [f"- {x['input']!r} -> {x['answer']!r}; swapped {x['swapped']!r} -> {x['swapped_answer']!r}"
               for x in cf.get("examples", [])]
    return "\n".join(md) + "\n"


def card_lines(result: dict[str, Any] | None) -> str:
    """The model card's sentence on bias: what was checked and found, or that nothing was."""
    if not result:
        return ("It was not tested for bias (run `tuneforge fairness RUN` to check group gaps and counterfactual "
                "swaps), toxicity or robustness to adversarial input.")
    parts = []
    for name, g in result.get("groups", {}).items():
        if "largest_gap" in g:
            lg = g["largest_gap"]
            parts.append(f"the largest {result['metric']} gap by `{name}` is {lg['gap']:.3f} ({lg['groups'][0]} vs "
                         f"{lg['groups'][1]}, 95% CI [{lg['ci'][0]:.3f}, {lg['ci'][1]:.3f}])")
    cf = result.get("counterfactual", {})
    if cf.get("swapped"):
        parts.append(f"swapping group terms (pronouns, names) in {cf['swapped']} inputs changed "
                     f"{cf['change_rate']:.1%} of the answers")
    elif "pairs" in cf:
        parts.append("no test input held a group term to swap")
    return ("Bias checks (fairness.md): " + "; ".join(parts) + ". Not tested for toxicity or adversarial input."
            if parts else "Bias checks found nothing to measure on this test split.")
