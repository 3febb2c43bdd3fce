"""Catastrophic forgetting: measure it, and two guards against it (EWC and rehearsal).

A fine-tune that wins on its task may lose general ability (McCloskey & Cohen 1989; Kirkpatrick et al.
2017). The measurement is what every user should see before trusting a tuned model: perplexity on a
general-text sample and accuracy on a small general-knowledge probe, before and after. The guards:

- EWC (https://arxiv.org/abs/1612.00796, in ``train/ewc.py``): a pull back to the pre-trained weights,
  strongest where the Fisher information on general text says a weight matters.
- Rehearsal (experience replay) mixes a share of general-text sequences into the training set.

``ForgettingHook`` measures as a hook of the loop: before training on the untouched model, after
training on the model with its best weights back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuneforge.data.readers import read_records
from tuneforge.errors import ConfigError
from tuneforge.files import write_json_atomic
from tuneforge.recipe import ForgettingConfig
from tuneforge.tasks.base import Encoded, Task, end_of_turn, mean_loss, pad_id, prompt_text
from tuneforge.tasks.decoding import option_logprobs
from tuneforge.train.hooks import TrainHook


def _builtin(name: str) -> Path:
    return Path(str(resources.files("tuneforge") / "resources" / "general" / name))


def general_text(cfg: ForgettingConfig) -> str:
    path = cfg.general_text or _builtin("python_reference.txt")
    if path.suffix == ".txt":
        return path.read_text(encoding="utf-8")
    texts = [r.fields.get("text") for r in read_records(path)]
    if not all(isinstance(t, str) for t in texts):
        raise ConfigError(f"forgetting.general_text: every row of {path} needs a text field")
    return "\n\n".join(t for t in texts if t)


def general_chunks(cfg: ForgettingConfig, tokenizer: PreTrainedTokenizerBase, length: int) -> list[Encoded]:
    """Up to ``max_chunks`` consecutive blocks of ``length`` tokens; every position carries loss."""
    ids = tokenizer(general_text(cfg), add_special_tokens=False)["input_ids"]
    chunks = [ids[i : i + length] for i in range(0, len(ids) - length + 1, length)][: cfg.max_chunks]
    if not chunks:
        raise ConfigError(f"forgetting.general_text holds fewer than {length} tokens; give more text")
    return [Encoded(input_ids=c, labels=list(c), n_answer=len(c) - 1) for c in chunks]


def general_perplexity(model: nn.Module, task: Task, chunks: list[Encoded], batch_size: int) -> float:
    return math.exp(mean_loss(model, task, chunks, batch_size))


def load_probe(cfg: ForgettingConfig) -> list[dict[str, Any]]:
    path = cfg.probe or _builtin("probe.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, row in enumerate(rows, 1):
        if not (isinstance(row.get("question"), str) and isinstance(row.get("choices"), list)
                and isinstance(row.get("answer"), int) and 0 <= row["answer"] < len(row["choices"])):
            raise ConfigError(f"{path}:{i}: a probe row needs question (text), choices (list) and answer (index)")
    return rows


@torch.no_grad()
def probe_accuracy(model: nn.Module, tokenizer: PreTrainedTokenizerBase, probe: list[dict[str, Any]]) -> float:
    """Share of questions whose right choice is the most likely assistant answer."""
    was_training = model.training
    model.eval()
    eot = end_of_turn(tokenizer)
    right = 0
    for row in probe:
        prompt = tokenizer(prompt_text(tokenizer, [{"role": "user", "content": row["question"]}]),
                           add_special_tokens=False)["input_ids"]
        options = [tokenizer(str(c) + eot, add_special_tokens=False)["input_ids"] for c in row["choices"]]
        scores = option_logprobs(model, prompt, options, pad_id(tokenizer))
        right += int(max(range(len(scores)), key=scores.__getitem__) == row["answer"])
    model.train(was_training)
    return right / len(probe)


def measure(model: nn.Module, task: Task, chunks: list[Encoded], probe: list[dict[str, Any]],
            batch_size: int) -> dict[str, float]:
    return {"general_perplexity": general_perplexity(model, task, chunks, batch_size),
            "probe_accuracy": probe_accuracy(model, task.tokenizer, probe)}


def compare(before: dict[str, float], after: dict[str, float], n_probe: int) -> dict[str, Any]:
    return {"before": before, "after": after, "probe_questions": n_probe,
            "perplexity_change": after["general_perplexity"] / before["general_perplexity"] - 1.0,
            "probe_accuracy_change": after["probe_accuracy"] - before["probe_accuracy"]}


def rehearsal_examples(chunks: list[Encoded], n_train: int, fraction: float) -> list[Encoded]:
    """``fraction`` of the final training set, drawn (cycling) from the general-text chunks."""
    n = max(1, round(fraction / (1 - fraction) * n_train))
    return [chunks[i % len(chunks)] for i in range(n)]


class ForgettingHook(TrainHook):
    """General-text perplexity and probe accuracy before (``on_start``) and after (``on_end``) training.

    ``saved`` keeps the first measurement, so a resumed run compares against the untouched model
    rather than against its checkpoint. ``after``: measure after training too (the process that
    writes the report). ``result`` is the comparison once training has ended.
    """

    def __init__(self, task: Task, chunks: list[Encoded], probe: list[dict[str, Any]], batch_size: int,
                 saved: Path, echo: Callable[[str], object] = print, after: bool = True) -> None:
        self.task, self.chunks, self.probe, self.batch_size = task, chunks, probe, batch_size
        self.saved, self.echo, self.after = saved, echo, after
        self.before: dict[str, float] | None = None
        self.result: dict[str, Any] | None = None

    def on_start(self, model: nn.Module) -> None:
        if self.saved.is_file():
            self.before = json.loads(self.saved.read_text(encoding="utf-8"))
            return
        self.echo(f"measuring general ability before training ({len(self.chunks)} text chunks, "
                  f"{len(self.probe)} probe questions)")
        self.before = measure(model, self.task, self.chunks, self.probe, self.batch_size)
        write_json_atomic(self.saved, self.before)

    def on_end(self, model: nn.Module) -> None:
        if not self.after or self.before is None:
            return
        self.echo("measuring general ability after training")
        after = measure(model, self.task, self.chunks, self.probe, self.batch_size)
        self.result = compare(self.before, after, len(self.probe))
