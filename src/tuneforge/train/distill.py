"""Knowledge distillation: what the teacher says, and the loss that teaches it to a student.

The teacher is a finished run folder and may use any model and tokenizer: it is asked once, before
training, for its label distribution (classification) or its own answers (extraction and generation),
so the student's training step never runs the teacher and holds only one model in memory.
"""

from __future__ import annotations

import math
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
    if student.name == "classification" and teacher.task.schema.get("labels") != student.schema.get("labels"):
        raise ConfigError(f"distill.teacher: the teacher's labels {teacher.task.schema.get('labels')} differ from "
                          f"the student's {student.schema.get('labels')}")
    return teacher.task.predict(teacher.model, examples)


def apply_teacher(cfg: DistillConfig, task: Task, examples: list[Example]) -> tuple[list[Example], list[list[float]] | None]:
    """Examples to train on and, for classification, each one's soft labels.

    Classification keeps the true labels (mixed in by ``1 - alpha``) and adds the teacher's
    distribution; extraction and generation train on the teacher's answers (sequence-level KD).
    """
    outputs = teacher_outputs(cfg, task, examples)
    if task.name == "classification":
        labels = task.schema["labels"]
        soft = [[float(o["probabilities"][label]) for label in labels] for o in outputs]
        assert all(math.isclose(sum(s), 1.0, abs_tol=1e-3) for s in soft)
        return examples, soft
    # an extraction teacher's unparseable answer teaches nothing: keep the reference there
    relabelled = [Example(where=e.where, text=e.text, target=e.target if o["prediction"] is None else o["prediction"],
                          messages=e.messages) for e, o in zip(examples, outputs)]
    return relabelled, None
