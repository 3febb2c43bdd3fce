"""Knowledge distillation: what the teacher says about the student's training examples.

The teacher is a finished run folder and may use any model and tokenizer: it is asked once, before
training, for its label distribution (classification) or its own answers (extraction and generation),
so the student's training step never runs the teacher and holds only one model in memory. The run
layer opens the teacher run and hands it here (``Teacher``); the loss that teaches a classifier the
soft labels is :func:`tuneforge.tasks.distillation.distillation_loss_sum`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from tuneforge.errors import ConfigError
from tuneforge.recipe import DistillConfig
from tuneforge.tasks.base import Example, Task


class Teacher(Protocol):
    """A finished run opened for prediction (``tuneforge.run.loading.Loaded`` is one)."""

    task: Task
    model: nn.Module


#: opens the run folder ``distill.teacher`` names (``tuneforge.run.loading.load_run``)
TeacherOpener = Callable[[Path], Teacher]


def teacher_outputs(cfg: DistillConfig, student: Task, examples: list[Example],
                    teacher: Teacher) -> list[dict[str, Any]]:
    """The teacher run's predictions on the student's training examples."""
    if teacher.task.name != student.name:
        raise ConfigError(f"distill.teacher: {cfg.teacher} is a {teacher.task.name} run; the student's task is "
                          f"{student.name}")
    if student.name == "classification" and teacher.task.schema.get("labels") != student.schema.get("labels"):
        raise ConfigError(f"distill.teacher: the teacher's labels {teacher.task.schema.get('labels')} differ from "
                          f"the student's {student.schema.get('labels')}")
    return teacher.task.predict(teacher.model, examples)


def apply_teacher(cfg: DistillConfig, task: Task, examples: list[Example],
                  teacher: Teacher) -> tuple[list[Example], list[list[float]] | None]:
    """Examples to train on and, for classification, each one's soft labels.

    Classification keeps the true labels (mixed in by ``1 - alpha``) and adds the teacher's
    distribution; extraction and generation train on the teacher's answers (sequence-level KD).
    """
    outputs = teacher_outputs(cfg, task, examples, teacher)
    if task.name == "classification":
        labels = task.schema["labels"]
        soft = [[float(o["probabilities"][label]) for label in labels] for o in outputs]
        assert all(math.isclose(sum(s), 1.0, abs_tol=1e-3) for s in soft)
        return examples, soft
    # an extraction teacher's unparseable answer teaches nothing: keep the reference there
    relabelled = [Example(where=e.where, text=e.text, target=e.target if o["prediction"] is None else o["prediction"],
                          messages=e.messages) for e, o in zip(examples, outputs)]
    return relabelled, None
