"""Robustness: the tuned model's score on perturbed test inputs against the clean inputs.

Perturbations are small pure functions ``(text, rng) -> text`` in the ``PERTURBATIONS`` registry, each
seeded so the same run always sees the same noise:

- ``typos``: in about one word in ten (of 4+ letters) two neighbouring letters swap, one letter is
  dropped, or one is doubled, the three kinds of keyboard slips most spelling-error corpora count;
- ``lowercase`` / ``uppercase``: the whole input in one case;
- ``whitespace``: runs of spaces become 1-3 spaces or a tab, with stray spaces at both ends;
- ``truncate``: only the first half of the words is kept.

For each perturbation the report gives the headline metric clean and perturbed, a paired bootstrap
interval of the change of the per-item metric (same items both ways), and the share of items whose
prediction changed (flip rate).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tuneforge.evaluate.metrics_extra import paired_bootstrap
from tuneforge.registry import Registry
from tuneforge.files import write_json_atomic, write_text_atomic
from tuneforge.run.loading import load_run, load_split
from tuneforge.tasks.base import Example

Perturbation = Callable[[str, random.Random], str]
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


@PERTURBATIONS.register("typos")
def typos(text: str, rng: random.Random, rate: float = 0.1) -> str:
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) < 4 or not word.isalpha() or rng.random() >= rate:
            continue
        j = rng.randrange(1, len(word) - 1)
        kind = rng.choice(("swap", "drop", "double"))
        if kind == "swap":
            word = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
        elif kind == "drop":
            word = word[:j] + word[j + 1 :]
        else:
            word = word[:j] + word[j] + word[j:]
        words[i] = word
    return " ".join(words)


@PERTURBATIONS.register("lowercase")
def lowercase(text: str, rng: random.Random) -> str:
    return text.lower()


@PERTURBATIONS.register("uppercase")
def uppercase(text: str, rng: random.Random) -> str:
    return text.upper()


@PERTURBATIONS.register("whitespace")
def whitespace(text: str, rng: random.Random) -> str:
    gaps = [rng.choice((" ", "  ", "   ", "\t")) for _ in text.split()]
    return " " + "".join(w + g for w, g in zip(text.split(), gaps)).rstrip() + "  "


@PERTURBATIONS.register("truncate")
def truncate(text: str, rng: random.Random) -> str:
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


def perturb(examples: list[Example], name: str, seed: int) -> list[Example]:
    """The examples with their input perturbed (and the last user turn of a chat prompt, for decoders)."""
    fn = PERTURBATIONS.get(name)
    out = []
    for i, e in enumerate(examples):
        rng = random.Random(f"{seed}:{name}:{i}")
        text = fn(e.text, rng)
        messages = [dict(m) for m in e.messages]
        for m in reversed(messages):
            if m.get("role") == "user":
                m["content"] = fn(m["content"], random.Random(f"{seed}:{name}:{i}"))
                break
        out.append(replace(e, text=text, messages=messages))
    return out


def robustness(run_dir: Path | str, *, perturbations: list[str] | None = None, seed: int = 0,
               echo: Any = print) -> dict[str, Any]:
    """Score the run's tuned model on its clean and perturbed test split; write robustness.json/.md in the run."""
    names = perturbations or PERTURBATIONS.names()
    for name in names:
        PERTURBATIONS.get(name)
    loaded = load_run(run_dir)
    task = loaded.task
    test = load_split(run_dir, task, "test")
    metric = task.headline[0]
    per_item = task.per_item_metrics[0] if task.per_item_metrics else None

    def run(examples: list[Example]) -> tuple[list[dict[str, Any]], dict[str, Any], list[float] | None]:
        preds = task.predict(loaded.model, examples)
        scores = task.score(examples, preds)
        items = task.item_scores(examples, preds).get(per_item) if per_item else None
        return preds, scores, items

    clean_preds, clean_scores, clean_items = run(test)
    rows = []
    for name in names:
        echo(f"robustness: {name}")
        preds, scores, items = run(perturb(test, name, seed))
        row: dict[str, Any] = {"perturbation": name, "clean": float(clean_scores[metric]),
                               "perturbed": float(scores[metric]),
                               "change": float(scores[metric]) - float(clean_scores[metric]),
                               "flip_rate": sum(_key(a) != _key(b) for a, b in zip(clean_preds, preds)) / len(test)}
        if clean_items is not None and items is not None:
            boot = paired_bootstrap(clean_items, items)
            row["item_change_ci"] = [boot["ci_low"], boot["ci_high"]]
            row["real"] = boot["ci_low"] > 0 or boot["ci_high"] < 0
        row["example"] = {"clean": test[0].text, "perturbed": perturb(test[:1], name, seed)[0].text}
        rows.append(row)
    result = {"metric": metric, "item_metric": per_item, "n_test": len(test), "seed": seed, "rows": rows}
    write_json_atomic(Path(run_dir) / "robustness.json", result)
    write_text_atomic(Path(run_dir) / "robustness.md", render_markdown(result))
    echo(render_markdown(result))
    return result


def _key(prediction: dict[str, Any]) -> str:
    return str(prediction.get("raw", prediction["prediction"]))


def render_markdown(result: dict[str, Any]) -> str:
    md = [f"# Robustness: {result['metric']} on perturbed test inputs ({result['n_test']} items)", "",
          f"| perturbation | clean | perturbed | change | 95% CI of change ({result['item_metric']}) | flip rate | example |",
          "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ci = r.get("item_change_ci")
        ci_text = "-" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" + (" real" if r.get("real") else "")
        md.append(f"| {r['perturbation']} | {r['clean']:.4f} | {r['perturbed']:.4f} | {r['change']:+.4f} | {ci_text} | "
                  f"{r['flip_rate']:.3f} | {r['example']['perturbed'][:60]!r} |")
    return "\n".join(md) + "\n"
