"""Strong defaults: what a recipe that leaves out ``method`` or ``train`` gets, and why, in one line each.

Why here and as pure functions: a user who writes only ``task``, ``model`` and ``data`` should get the run an
expert would set up, not the schema's neutral defaults (a new 64-way head at ``lr 1e-4`` for 5 epochs lost to
a 7-second nearest-neighbour vote). Each rule reads the shape of the data (rows, classes, smallest class,
balance, lengths) and of the model (encoder or decoder, size, whether the head is new) and returns one
``Choice``: a recipe key, its value and the reason, which the preflight prints and the report keeps. A key the
recipe gives is never chosen: every explicit key wins. The pipeline applies the choices
(``tuneforge.run.pipeline``) and, after the preflight has measured the throughput, caps the steps to
``train.time_budget`` (``budget_choice``).

The rules follow the data's shape, not one data set: the numbers come from the literature (BERT's fine-tuning
range, LoRA's rates) and from the measurements in ``bench/QUALITY_RESULTS.md`` on two intent sets of very
different shapes (64 classes x 20 rows, 7 classes x 2,000 rows).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from tuneforge.models.resolve import ResolvedModel
from tuneforge.tasks.base import Example


@runtime_checkable
class InitialisesHead(Protocol):
    """A task whose encoder head can start from its training data (``train.head_init: class_mean``)."""

    def init_head(self, model: nn.Module, examples: list[Example]) -> dict[str, float]: ...


def model_params(resolved: ResolvedModel) -> int:
    """The model's parameter count: the registry's, else estimated from ``config.json`` (12 L H^2 + V H)."""
    if resolved.spec is not None:
        return resolved.spec.params
    config = json.loads((resolved.path / "config.json").read_text(encoding="utf-8"))
    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    return 12 * layers * hidden**2 + int(config.get("vocab_size") or 0) * hidden


@dataclass(frozen=True)
class DataShape:
    """What the rules read from the training data (after splitting)."""

    rows: int
    validation_rows: int
    classes: int | None = None  # the label set's size, for tasks that predict a label
    smallest_class: int | None = None  # rows of the rarest label in train
    largest_class: int | None = None
    mean_tokens: float = 0.0  # per training row, after templating

    @property
    def imbalance(self) -> float:
        """Largest over smallest class (1.0 = balanced; 1.0 when the task has no classes)."""
        if not self.smallest_class or not self.largest_class:
            return 1.0
        return self.largest_class / self.smallest_class


@dataclass(frozen=True)
class ModelShape:
    """What the rules read from the model."""

    kind: str  # "encoder" or "decoder"
    params: int
    new_head: bool  # an encoder whose label head starts untrained


@dataclass(frozen=True)
class Choice:
    """One recipe key chosen for the user: ``key`` is its dotted path (``train.lr``)."""

    key: str
    value: Any
    reason: str

    def line(self) -> str:
        return f"{self.key} {_show(self.value)}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "reason": self.reason}


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def class_counts(targets: Sequence[Any]) -> Counter[str]:
    return Counter(str(t) for t in targets)


def data_shape(rows: int, validation_rows: int, token_lengths: Sequence[int],
               labels: Sequence[str] | None = None) -> DataShape:
    """The shape of a training set: ``labels`` is one label per training row, ``None`` for a task without."""
    mean = sum(token_lengths) / max(1, len(token_lengths))
    if not labels:
        return DataShape(rows, validation_rows, mean_tokens=mean)
    counts = class_counts(labels)
    return DataShape(rows, validation_rows, classes=len(counts), smallest_class=min(counts.values()),
                     largest_class=max(counts.values()), mean_tokens=mean)


# ----------------------------------------------------------------------------- the rules
Rule = Callable[[DataShape, ModelShape, str], Choice | None]
"""A rule sees the data, the model and the method name (chosen or given) and may choose one key."""


def encoder_method(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    if model.kind != "encoder":
        return None
    why = ("a new label head on a pre-trained body: the head gets its own, higher rate and lower layers move "
           "less (Howard & Ruder 2018)") if model.new_head else "every weight trains, lower layers more gently"
    return Choice("method", {"name": "discriminative", "layer_lr_decay": 0.9, "head_lr": HEAD_LR}, why)


def decoder_method(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    if model.kind != "decoder":
        return None
    rank = 8 if data.rows < 2_000 else 16
    return Choice("method", {"name": "lora", "r": rank, "alpha": 2 * rank},
                  f"a decoder of {model.params / 1e6:.0f}M parameters: LoRA r {rank} (alpha 2r) for "
                  f"{data.rows:,} rows (more rows carry more to learn; r 8-16 is LoRA's usual range)")


#: the rate of a new encoder head (bench/QUALITY_RESULTS.md: 3e-3 beat 1e-3 and 1e-2 on both intent sets)
HEAD_LR = 3e-3


def learning_rate(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    if method == "lora":
        return Choice("train.lr", 2e-4, "LoRA adapters start at zero and take a higher rate than full weights")
    if model.kind == "encoder":
        return Choice("train.lr", 1e-4 if model.params < 50e6 else 3e-5,
                      f"the body's rate for a {model.params / 1e6:.0f}M encoder (small encoders take the top of "
                      "BERT's 2e-5..1e-4 range)")
    return Choice("train.lr", 2e-5, "full fine-tuning of a decoder: a low rate keeps its general ability")


def chosen_batch(data: DataShape, model: ModelShape) -> int:
    """Examples per step: 16 for a small encoder set (more updates per epoch), 32 for a large one, 8 for decoders."""
    if model.kind == "encoder":
        return 16 if data.rows < 4_000 else 32
    return 8


def batch_size(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    size = chosen_batch(data, model)
    if model.kind == "encoder":
        return Choice("train.batch_size", size, f"{data.rows:,} rows: " + (
            "small batches give more updates per epoch" if size == 16 else "large data: larger batches, same time"))
    return Choice("train.batch_size", size, "decoder sequences are long: 8 per step keeps memory small")


def target_steps(data: DataShape, model: ModelShape) -> int:
    """Updates a run should get: a new head needs about ten per class to separate them, and no run fewer than 300."""
    if model.kind == "encoder":
        return max(300, 10 * (data.classes or 0))
    return max(200, min(1_000, data.rows // 2))


def epochs(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    per_epoch = max(1, math.ceil(data.rows / chosen_batch(data, model)))
    wanted = target_steps(data, model)
    n = min(20, max(1, math.ceil(wanted / per_epoch)))
    what = f"{data.classes} classes" if data.classes else f"{data.rows:,} rows"
    return Choice("train.epochs", float(n), f"{what} want ~{wanted} updates; {per_epoch} per epoch"
                  + (" (capped at 20 epochs)" if n == 20 else "")
                  + "; early stopping ends it sooner if it stops helping")


def warmup(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    return Choice("train.warmup_fraction", 0.1, "a tenth of the steps of warm-up keeps the first updates of a new "
                  "head or adapter from wrecking the body")


def weight_decay(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    return Choice("train.weight_decay", 0.01, "light AdamW decay, as BERT and LoRA fine-tuning use")


def early_stopping(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    if data.validation_rows == 0:
        return None
    if data.classes:
        metric = "macro_f1" if data.imbalance > 3 else "accuracy"
        why = (f"classes are imbalanced ({data.imbalance:.0f}:1): watch macro-F1" if metric == "macro_f1"
               else "balanced classes: watch validation accuracy")
    else:
        metric, why = "loss", "watch the validation loss"
    # a small validation set's score moves by several points between checks (128 rows: +-4%), so one dip must
    # not end the run (hwu64: patience 3 stopped at step 320 of 648 at 0.755 test accuracy; the full run gave 0.842)
    patience = 3 if data.validation_rows >= 1_000 else 5
    return Choice("train.early_stopping", {"metric": metric, "patience": patience},
                  f"{why}; stop after {patience} checks without gain ({data.validation_rows:,} validation rows"
                  f"{'' if patience == 3 else ' are noisy'}) and keep the best weights")


def eval_every(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    if data.validation_rows == 0:
        return None
    ep = epochs(data, model, method)
    assert ep is not None
    steps = math.ceil(float(ep.value) * math.ceil(data.rows / chosen_batch(data, model)))
    every = max(10, steps // 10)
    return Choice("train.eval_every", every, f"about ten validations over ~{steps} steps, so early stopping "
                  "and the best checkpoint can act within an epoch")


def head_init(data: DataShape, model: ModelShape, method: str) -> Choice | None:
    if not model.new_head:
        return None
    # measured (bench/QUALITY_RESULTS.md): on hwu64 a class-mean start over the head's own (CLS pooler) features
    # gave 0.755 and 0.842 test accuracy where a random start with the head's own rate gave 0.852
    return Choice("train.head_init", "random", "a random head with its own rate beat a class-mean start on the "
                  "features a BERT head reads (its CLS pooler, not the mean-pooled embedding kNN uses); "
                  "set train.head_init: class_mean to try it")


#: the rules in order; a rule's key is skipped when the recipe gives it
METHOD_RULES: tuple[Rule, ...] = (encoder_method, decoder_method)
TRAIN_RULES: tuple[Rule, ...] = (learning_rate, batch_size, epochs, warmup, weight_decay, early_stopping,
                                 eval_every, head_init)


def choose(data: DataShape, model: ModelShape, given: set[str], method: str | None) -> list[Choice]:
    """Every choice for the keys not in ``given`` (dotted paths); ``method`` is the recipe's method name,
    ``None`` when the recipe leaves it to us. Train keys that depend on epochs (``eval_every``) are chosen only
    when the steps are ours too."""
    out: list[Choice] = []
    if method is None:
        picked = next((c for rule in METHOD_RULES if (c := rule(data, model, "")) is not None), None)
        if picked is not None:
            out.append(picked)
        method = picked.value["name"] if picked is not None else "full"
    steps_given = bool({"train.epochs", "train.max_steps", "train.batch_size"} & given)
    for rule in TRAIN_RULES:
        choice = rule(data, model, method)
        if choice is None or choice.key in given:
            continue
        if choice.key == "train.eval_every" and steps_given:
            continue
        out.append(choice)
    return out


def budget_choice(planned_steps: int, seconds_per_step: float, budget_s: float) -> Choice | None:
    """Fewer steps when the planned ones would overrun ``train.time_budget``; 15% is kept for validation."""
    if seconds_per_step <= 0 or planned_steps * seconds_per_step <= 0.85 * budget_s:
        return None
    steps = max(1, int(0.85 * budget_s / seconds_per_step))
    return Choice("train.max_steps", steps,
                  f"{planned_steps} steps would take ~{planned_steps * seconds_per_step:.0f} s "
                  f"at the measured {1 / seconds_per_step:.1f} steps/s, over train.time_budget ({budget_s:.0f} s)")


def as_overrides(choices: Sequence[Choice]) -> dict[str, Any]:
    """The choices as a nested dict to merge into the recipe (``train.lr`` -> ``{"train": {"lr": ...}}``)."""
    out: dict[str, Any] = {}
    for c in choices:
        *parents, last = c.key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = c.value
    return out
