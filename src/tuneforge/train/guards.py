"""What a run adds around the loop: the training set as the recipe shapes it, and the forgetting check.

Kept out of ``tuneforge.run.pipeline.train`` so that the order of a run stays readable there: distillation relabels the
training examples, rehearsal mixes general text in, and the forgetting check measures the base model
before training, builds the EWC penalty from it, and measures again after.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from tuneforge.tasks.encode_cache import encode_cached
from tuneforge.errors import ConfigError, UserError
from tuneforge.recipe import Recipe
from tuneforge.run.folder import RunDir
from tuneforge.files import write_json_atomic
from tuneforge.tasks.base import Encoded, Example, Task
from tuneforge.train import forgetting
from tuneforge.train.distill import TeacherOpener, apply_teacher
from tuneforge.train.ewc import EWCPenalty, ewc_penalty


def training_set(recipe: Recipe, task: Task, examples: list[Example], echo: Any = print,
                 open_teacher: TeacherOpener | None = None) -> list[Encoded]:
    """Encoded training examples with answer tokens, relabelled by a teacher when distilling.

    ``open_teacher`` opens the run ``distill.teacher`` names; the run pipeline hands it in.
    """
    soft = None
    if recipe.distill is not None:
        if task.name == "language_modeling":
            raise ConfigError("distill: continued pre-training learns from raw text, not from a teacher; "
                              "remove the distill section")
        echo(f"asking the teacher {recipe.distill.teacher} about {len(examples)} training examples")
        if open_teacher is None:
            raise ConfigError("distill: this caller cannot open a teacher run; train through tuneforge.api.train")
        examples, soft = apply_teacher(recipe.distill, task, examples, open_teacher(recipe.distill.teacher))
        if soft is not None and task.model_kind != "encoder":
            raise ConfigError("distill: soft labels train an encoder classifier; a decoder student learns a "
                              "classification teacher's labels through task: extraction or generation instead")
    encoded, _ = encode_cached(task, examples)
    if soft is not None:
        for e, s in zip(encoded, soft):
            e.soft = s
    kept = [e for e in encoded if e.n_answer > 0]
    if not kept:
        raise UserError("no training row keeps any answer token within train.max_length; raise it")
    return kept


class ForgettingCheck:
    """General-text perplexity and probe accuracy before and after, plus the EWC and rehearsal guards."""

    def __init__(self, recipe: Recipe, task: Task) -> None:
        cfg = recipe.forgetting
        assert cfg is not None
        if task.head != "causal_lm":
            raise ConfigError("forgetting: measuring and guarding general-text ability needs a decoder model "
                              f"({recipe.model} is an encoder); remove the forgetting section")
        self.cfg = cfg
        self.task = task
        self.batch_size = recipe.eval.batch_size
        chunks = forgetting.general_chunks(cfg, task.tokenizer, recipe.train.max_length)
        # Guards train on (rehearsal) or estimate from (EWC) other chunks than the ones measured, so a
        # guard cannot look good by memorising the measurement text.
        self.chunks = chunks[::2]
        self.guard_chunks = chunks[1::2] or chunks
        self.probe = forgetting.load_probe(cfg)

    def rehearsal(self, n_train: int) -> list[Encoded]:
        if self.cfg.rehearsal is None:
            return []
        return forgetting.rehearsal_examples(self.guard_chunks, n_train, self.cfg.rehearsal.fraction)

    def before(self, model: nn.Module, run: RunDir, echo: Any = print) -> dict[str, float] | None:
        """Scores of the untouched model; a resumed run reuses the saved ones."""
        if not self.cfg.measure:
            return None
        saved = run.root / "forgetting_before.json"
        if saved.is_file():
            return json.loads(saved.read_text(encoding="utf-8"))
        echo(f"measuring general ability before training ({len(self.chunks)} text chunks, {len(self.probe)} probe questions)")
        scores = forgetting.measure(model, self.task, self.chunks, self.probe, self.batch_size)
        write_json_atomic(saved, scores)
        return scores

    def penalty(self, model: nn.Module) -> EWCPenalty | None:
        if self.cfg.ewc is None:
            return None
        return ewc_penalty(model, self.task, self.guard_chunks, self.cfg.ewc, self.batch_size)

    def after(self, model: nn.Module, before: dict[str, float] | None) -> dict[str, Any] | None:
        if before is None:
            return None
        after = forgetting.measure(model, self.task, self.chunks, self.probe, self.batch_size)
        return forgetting.compare(before, after, len(self.probe))
