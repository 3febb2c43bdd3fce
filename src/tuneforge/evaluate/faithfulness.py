"""Faithfulness of text generated from structured input: the facts it drops and the facts it invents.

Data-to-text output can read well and still be wrong: it leaves out that a restaurant is by the river, or
calls an English place Italian. The E2E literature counts this as the *slot error rate* (Dušek et al. 2020,
https://arxiv.org/abs/1901.07931, section 5.3): SER = (omitted + hallucinated) / input slots.

This module does it without hand-written rules per data set, for any input written as ``key[value], ...``
(E2E, WebNLG-like meaning representations) or as a JSON object:

- a value is *mentioned* when its words appear in the output in a row, compared case-insensitively on a
  short stem (the first ``STEM`` letters), so "moderate" matches "moderately" and "3 out of 5" matches
  "3 out of 5 stars" but not "1 out of 5";
- *omitted*: an input value the output does not mention;
- *hallucinated*: a value that some other input of the same key holds (the key's vocabulary, gathered from
  every input scored together) and that the output mentions, although this input holds another value of that
  key or none; a value that one of this input's own values contains is not counted (saying the one says the
  other);
- yes/no values (``familyFriendly[no]``) cannot be checked by words and are counted as ``unchecked``.

Lexical matching undercounts paraphrases ("average" for "3 out of 5"), so the rate is an upper bound on
omissions and a lower bound on hallucinations; the report says so beside the figure.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tuneforge.evaluate.metrics import parse_json_object

#: letters of a word compared when matching values (a crude stem: "moderate" ~ "moderately")
STEM = 5
#: values that words cannot check: the output says "not family friendly", not "no"
UNCHECKABLE = frozenset({"yes", "no", "true", "false", "none", "null", "n/a", ""})
_SLOT = re.compile(r"([A-Za-z_][\w ]*?)\s*\[([^\[\]]*)\]")
_WORD = re.compile(r"[^\W_]+|[£$€]", re.UNICODE)


def parse_slots(text: str) -> dict[str, str] | None:
    """The input's key/value pairs, from ``key[value], ...`` or the first JSON object; ``None`` for free text.

    >>> parse_slots("name[Cocum], eatType[coffee shop], familyFriendly[no]")
    {'name': 'Cocum', 'eatType': 'coffee shop', 'familyFriendly': 'no'}
    >>> parse_slots('{"brand": "Acme", "size": 3}')
    {'brand': 'Acme', 'size': '3'}
    >>> parse_slots("just a sentence") is None
    True
    """
    found = {k.strip(): v.strip() for k, v in _SLOT.findall(text)}
    if found:
        return found
    obj = parse_json_object(text)
    if obj is None:
        return None
    return {k: _json_text(v) for k, v in _flatten(obj).items() if v is not None}


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _stems(text: str) -> list[str]:
    return [w.casefold()[:STEM] for w in _WORD.findall(text)]


def mentions(value: str, output: str) -> bool:
    """Whether the words of ``value`` appear in a row (by stem) in ``output``.

    >>> mentions("moderate", "a moderately priced pub"), mentions("coffee shop", "a shop")
    (True, False)
    >>> mentions("5 out of 5", "rated 1 out of 5")
    False
    """
    said, words = _stems(output), _stems(value)
    n = len(words)
    return n > 0 and any(said[i:i + n] == words for i in range(len(said) - n + 1))


def checkable(value: str) -> bool:
    return value.strip().casefold() not in UNCHECKABLE and bool(_stems(value))


@dataclass
class ItemFaithfulness:
    """One output against its input: the slots it checked, and those it dropped or invented."""

    slots: int
    unchecked: int
    omitted: list[str] = field(default_factory=list)
    hallucinated: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return len(self.omitted) + len(self.hallucinated)

    @property
    def slot_error_rate(self) -> float:
        return self.errors / self.slots if self.slots else 0.0


def vocabulary(inputs: list[dict[str, str]]) -> dict[str, set[str]]:
    """Every checkable value each key takes across the inputs: what an output could wrongly claim."""
    vocab: dict[str, set[str]] = defaultdict(set)
    for slots in inputs:
        for key, value in slots.items():
            if checkable(value):
                vocab[key].add(value)
    return vocab


def check_item(slots: dict[str, str], output: str, vocab: dict[str, set[str]]) -> ItemFaithfulness:
    """Omitted and hallucinated values of one output (see the module docstring for the rules)."""
    own = [v for v in slots.values() if checkable(v)]
    item = ItemFaithfulness(slots=len(own), unchecked=len(slots) - len(own))
    item.omitted = [f"{k}[{v}]" for k, v in slots.items() if checkable(v) and not mentions(v, output)]
    for key, values in vocab.items():
        for value in sorted(values):
            if value == slots.get(key) or any(mentions(value, v) for v in slots.values()):
                continue
            if mentions(value, output):
                item.hallucinated.append(f"{key}[{value}]")
    return item


def structured_inputs(texts: list[str]) -> list[dict[str, str]] | None:
    """Every input's slots, or ``None`` unless every input is structured (free text gets no slot check)."""
    parsed = [parse_slots(t) for t in texts]
    if not parsed or any(p is None for p in parsed):
        return None
    return [p for p in parsed if p is not None]


def faithfulness(inputs: list[dict[str, str]], outputs: list[str]) -> dict[str, Any]:
    """Per-item and total omissions, hallucinations and the slot error rate of ``outputs`` against ``inputs``."""
    if len(inputs) != len(outputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs: they must pair up one to one")
    vocab = vocabulary(inputs)
    items = [check_item(s, o, vocab) for s, o in zip(inputs, outputs)]
    slots = sum(i.slots for i in items)
    omitted = sum(len(i.omitted) for i in items)
    hallucinated = sum(len(i.hallucinated) for i in items)
    return {"slot_error_rate": (omitted + hallucinated) / slots if slots else 0.0, "slots": slots,
            "omitted": omitted, "hallucinated": hallucinated, "unchecked": sum(i.unchecked for i in items),
            "items_with_errors": sum(i.errors > 0 for i in items),
            "items": [{"slots": i.slots, "omitted": i.omitted, "hallucinated": i.hallucinated,
                       "slot_error_rate": i.slot_error_rate} for i in items]}


def slot_error_rate(inputs: list[dict[str, str]], outputs: list[str], vocab: dict[str, set[str]]) -> float:
    """The total rate on a subset, with the vocabulary of the whole set (what the report's bootstrap resamples)."""
    items = [check_item(s, o, vocab) for s, o in zip(inputs, outputs)]
    slots = sum(i.slots for i in items)
    return sum(i.errors for i in items) / slots if slots else 0.0


def faithfulness_markdown(result: dict[str, Any]) -> list[str]:
    """The report's section: totals for each model, and the worst items of the tuned one."""
    md = ["", "## Faithfulness to the structured input (slot error rate)", "",
          "Values matched by their words (stems): paraphrases count as omitted, so omissions are an upper bound "
          "and hallucinations a lower bound. yes/no values are not checked.", "",
          "| model | slot error rate | omitted | hallucinated | slots checked | items with errors |",
          "|---|---|---|---|---|---|"]
    for name in ("base", "tuned"):
        if name in result:
            r = result[name]
            md.append(f"| {name} | {r['slot_error_rate']:.4f} | {r['omitted']} | {r['hallucinated']} | "
                      f"{r['slots']} | {r['items_with_errors']} |")
    worst = sorted(enumerate(result["tuned"]["items"]), key=lambda p: -p[1]["slot_error_rate"])[:5]
    worst = [(i, it) for i, it in worst if it["slot_error_rate"] > 0]
    if worst:
        md += ["", "Tuned model, worst items:", ""]
        md += [f"- item {i}: omitted {', '.join(it['omitted']) or '-'}; hallucinated "
               f"{', '.join(it['hallucinated']) or '-'}" for i, it in worst]
    return md
