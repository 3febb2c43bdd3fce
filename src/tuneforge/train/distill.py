"""Knowledge distillation: what the teacher says, and the loss that teaches it to a student.

The teacher is a finished run folder and may use any model and tokenizer: it is asked once, before
training, for its label distribution (classification) or its own answers (extraction and generation),
so the student's training step never runs the teacher and holds only one model in memory.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneforge.errors import ConfigError
from tuneforge.recipe import DistillConfig
from tuneforge.tasks.base import Example, Task


def distillation_loss_sum(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): T^2 * KL(teacher_T || student_T), summed over the batch.

    ``student_logits`` (B, K); ``teacher_probs`` (B, K) at temperature 1. The teacher is softened as
    p^(1/T) renormalised, which equals softmax(teacher_logits / T). The T^2 factor keeps the soft
    term's gradient on the scale of the hard cross-entropy as T changes.
    """
    t = temperature
    teacher_log = torch.log_softmax(torch.log(teacher_probs.clamp_min(1e-12)) / t, dim=-1)  # (B, K)
    student_log = torch.log_softmax(student_logits.float() / t, dim=-1)  # (B, K)
    kl = (teacher_log.exp() * (teacher_log - student_log)).sum(dim=-1)  # (B,)
    return kl.sum() * t * t


def teacher_outputs(cfg: DistillConfig, student: Task, examples: list[Example]) -> list[dict[str, Any]]:
    """The teacher run's predictions on the student's training examples."""
    from tuneforge.api import load_run

    teacher = load_run(cfg.teacher)
    if teacher.task.name != student.name:
        raise ConfigError(f"distill.teacher: {cfg.teacher} is a {teacher.task.name} run; the student's task is "
                          f"{student.name}")
    student.check_teacher(teacher.task)
    return teacher.task.predict(teacher.model, examples)


def apply_teacher(cfg: DistillConfig, task: Task, examples: list[Example]) -> tuple[list[Example], list[list[float]] | None]:
    """Examples to train on and, where the task has them, each one's soft labels (``Task.distill_targets``:
    classification adds the teacher's distribution, extraction and generation learn its answers)."""
    return task.distill_targets(examples, teacher_outputs(cfg, task, examples))
