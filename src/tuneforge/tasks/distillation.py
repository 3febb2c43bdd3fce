"""The distillation loss: a leaf function of the tasks layer, used by a classifier learning soft labels.

Where the soft labels come from (a teacher run, asked once before training) is the run pipeline's
business (:mod:`tuneforge.train.distill`); the task only needs the loss.
"""

from __future__ import annotations

import torch


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
