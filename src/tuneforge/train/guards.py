"""What a run adds around the loop: the training set as the recipe shapes it, and the forgetting check.

Kept out of ``tuneforge.run.pipeline.train`` so that the order of a run stays readable there: distillation relabels the
training examples, rehearsal mixes general text in, and the forgetting check gives the loop its hooks:
the measurement of the base model before training and of the tuned one after, and the EWC penalty.
"""

from __future__ import annotations

from typing import Any

from tuneforge.tasks.encode_cache import encode_cached
from tuneforge.errors import ConfigError, UserError
from tuneforge.recipe import Recipe
from tuneforge.run.folder import RunDir
from tuneforge.tasks.base import Encoded, Example, Task
from tuneforge.train import forgetting
from tuneforge.train.distill import TeacherOpener, apply_teacher
from tuneforge.train.ewc import EWCHook
from tuneforge.train.hooks import TrainHook


def training_set(recipe: Recipe, task: Task, examples: list[Example], echo: Any = print,
                 open_teacher: TeacherOpener | None = None) -> list[Encoded]:
    """Encoded training examples with answer tokens, relabelled by a teacher when distilling.

    ``open_teacher`` opens the run ``distill.teacher`` names; the run pipeline hands it in.
    """
    soft = None
    if recipe.distill is not None:
        task.check_distill()
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

    def hooks(self, run: RunDir, echo: Any = print, *, main: bool = True) -> list[TrainHook]:
        """The loop's hooks: the measurement before and after (``main``: this process reports) and EWC."""
        hooks: list[TrainHook] = []
        if self.cfg.measure:
            hooks.append(forgetting.ForgettingHook(self.task, self.chunks, self.probe, self.batch_size,
                                                   run.root / "forgetting_before.json", echo, after=main))
        if self.cfg.ewc is not None:
            hooks.append(EWCHook(self.task, self.guard_chunks, self.cfg.ewc, self.batch_size))
        return hooks
