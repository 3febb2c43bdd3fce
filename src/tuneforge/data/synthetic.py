"""``tuneforge data synthesize``: new labelled rows written by a local instruct model, then filtered.

Self-instruct style (Wang et al., "Self-Instruct: Aligning Language Models with Self-Generated
Instructions", ACL 2023, https://arxiv.org/abs/2212.10560): the model sees the task description
and a few seed rows of one label, sampled afresh for every prompt, and writes one new row for that
label. Then every candidate goes through the filters in ``FILTERS`` order, and the report says how
many survive each:

1. ``format``: one line, 3 to 40 words, not a refusal or a list, not the label name alone;
2. ``dedup``: not an exact or near duplicate (MinHash Jaccard >= 0.7) of a real row or of an
   earlier candidate: self-instruct's ROUGE-L filter has the same purpose;
3. ``label``: when a trained run is given, its model must predict the intended label; rows it
   disagrees with are ambiguous at best (Self-Instruct filters by a classifier the same way).

Rows carry ``augmented: {"op": "synthetic", "source": null}`` so ``data split`` keeps them in train.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data import dedup
from tuneforge.data.readers import read_records
from tuneforge.errors import DataError
from tuneforge.files import write_jsonl_atomic

PROMPT = ("{task}\n\nHere are examples of requests with the label \"{label}\":\n{examples}\n\n"
          "Write one new request with the label \"{label}\". Make it different from the examples "
          "(other names, places and wording). Answer with the request only.")
FILTERS = ("format", "dedup", "label")
_REFUSAL = re.compile(r"\b(I'm sorry|I cannot|I can't|as an AI|here (is|are)|example|your request|"
                      r"(the )?(user's|new) request)\b", re.IGNORECASE)
# Chat-model chatter before the answer ("I'm ready to help.", "Sure!"): SmolLM2-135M starts most answers so.
_PREAMBLE = re.compile(r"^(?:\s*(?:I'm (?:ready|happy|glad) to help|sure|certainly|of course|okay|ok)"
                       r"\b[^.!?]*[.!?,])+\s*", re.IGNORECASE)
_LEAD = re.compile(r"^(?:\s*(?:[-*\d.)]+|request:|\"|'))+\s*", re.IGNORECASE)


@dataclass
class SynthesisReport:
    generated: int
    survivors: dict[str, int]
    """After each filter, in ``FILTERS`` order: how many candidates are still in."""
    rejected: dict[str, list[str]] = field(default_factory=dict)
    per_label: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def build_prompts(seeds: dict[str, list[str]], task: str, per_label: int, shots: int,
                  seed: int) -> list[tuple[str, list[dict[str, str]]]]:
    """``(label, chat prompt)`` pairs, ``per_label`` for each label, each showing a fresh sample of seeds."""
    rng = random.Random(seed)
    prompts = []
    for label, texts in sorted(seeds.items()):
        for _ in range(per_label):
            shown = rng.sample(texts, min(shots, len(texts)))
            examples = "\n".join(f"- {t}" for t in shown)
            prompts.append((label, [{"role": "user", "content": PROMPT.format(task=task, label=label,
                                                                                examples=examples)}]))
    return prompts


def clean_candidate(text: str) -> str:
    """The first line without chat preamble, list marker, ``Request:`` prefix or quotes."""
    line = _PREAMBLE.sub("", text.strip().split("\n")[0])
    return _LEAD.sub("", line).strip().strip('"\'').strip()


def format_ok(text: str, label: str) -> bool:
    words = text.split()
    return 3 <= len(words) <= 40 and not _REFUSAL.search(text) and text.strip().lower() != label.lower()


def filter_candidates(candidates: list[tuple[str, str]], real: list[str], *, check: Any = None,
                      near_threshold: float = 0.7) -> SynthesisReport:
    """Apply the filters to ``(label, raw text)`` candidates.

    ``check(texts) -> predicted labels`` is the label filter."""
    report = SynthesisReport(generated=len(candidates), survivors={})
    rows = [(label, clean_candidate(text)) for label, text in candidates]
    kept = [(lab, t) for lab, t in rows if format_ok(t, lab)]
    report.rejected["format"] = [t for lab, t in rows if not format_ok(t, lab)]
    report.survivors["format"] = len(kept)

    texts = [t for _, t in kept]
    seen_real = {j for j, _, _ in dedup.leaks(real, texts, threshold=near_threshold)}
    inner = {j for g in dedup.exact_groups(texts) for j in g.rows[1:]}
    inner |= {j for _, j, _ in dedup.near_pairs(texts, threshold=near_threshold)}
    report.rejected["dedup"] = [texts[j] for j in sorted(seen_real | inner)]
    kept = [kt for j, kt in enumerate(kept) if j not in seen_real | inner]
    report.survivors["dedup"] = len(kept)

    if check is not None and kept:
        predicted = check([t for _, t in kept])
        report.rejected["label"] = [f"{t} (asked {lab}, model says {p})" for (lab, t), p in zip(kept, predicted)
                                    if p != lab]
        kept = [(lab, t) for (lab, t), p in zip(kept, predicted) if p == lab]
    report.survivors["label"] = len(kept)
    report.per_label = dict(Counter(lab for lab, _ in kept))
    report.rows = [{"text": t, "label": lab, "augmented": {"op": "synthetic", "source": None}} for lab, t in kept]
    return report


def synthesize(seeds_file: Path | str, output: Path | str, *, task: str, per_label: int = 10, shots: int = 3,
               seed: int = 0, real_file: Path | str | None = None,
               check: Callable[[list[str]], list[str]] | None = None,
               model: str = "smollm2-135m-instruct", text_field: str = "text", label_field: str = "label",
               batch_size: int = 8) -> SynthesisReport:
    """Generate ``per_label`` candidates per label from ``seeds_file``, filter them, write the survivors.

    ``check(texts) -> predicted labels`` (a trained classifier: ``tuneforge.run.loading.label_model(run).predict``)
    drops candidates whose label it does not confirm; without it the label filter is skipped."""
    from tuneforge.data.generation import chat_model, generate_answers

    seeds: dict[str, list[str]] = {}
    for rec in read_records(Path(seeds_file)):
        text, label = rec.fields.get(text_field), rec.fields.get(label_field)
        if not isinstance(text, str) or label is None:
            raise DataError(f"{rec.where()}: seed rows need a string {text_field!r} and a {label_field!r}")
        seeds.setdefault(str(label), []).append(text)
    real = [str(r.fields.get(text_field, "")) for r in read_records(Path(real_file or seeds_file))]
    prompts = build_prompts(seeds, task, per_label, shots, seed)
    answers = generate_answers(chat_model(model), [p for _, p in prompts], batch_size=batch_size)
    report = filter_candidates([(lab, a) for (lab, _), a in zip(prompts, answers)], real, check=check)
    write_jsonl_atomic(Path(output), ({text_field: r["text"], label_field: r["label"], "augmented": r["augmented"]}
                                      for r in report.rows))
    return report
