"""Knowledge distillation: what the teacher says about the student's training examples.

The teacher is a finished run folder and may use any model and tokenizer: it is asked once, before
training, for its label distribution (classification) or its own answers (extraction and generation),
so the student's training step never runs the teacher and holds only one model in memory. The run
layer opens the teacher run and hands it here (``Teacher``); the loss that teaches a classifier the
soft labels is :func:`tuneforge.tasks.distillation.distillation_loss_sum`.
"""

from __future__ import annotations

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
    student.check_teacher(teacher.task)
    return teacher.task.predict(teacher.model, examples)


def apply_teacher(cfg: DistillConfig, task: Task, examples: list[Example],
                  teacher: Teacher) -> tuple[list[Example], list[list[float]] | None]:
    """Examples to train on and, where the task has them, each one's soft labels (``Task.distill_targets``:
    classification adds the teacher's distribution, extraction and generation learn its answers)."""
    return task.distill_targets(examples, teacher_outputs(cfg, task, examples, teacher))
