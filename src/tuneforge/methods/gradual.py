"""Gradual unfreezing (ULMFiT, Howard & Ruder 2018, https://arxiv.org/abs/1801.06146).

Training starts with only the head (and ``start_layers`` top blocks) unfrozen; every ``every_steps``
optimizer steps (or ``every_epochs`` epochs) one more block below unfreezes, and once every block trains
the embeddings follow. A new random head therefore settles before its gradients reach, and disturb, the
pre-trained body. Every parameter is in the optimizer from the start; a frozen one simply has no
gradient, which AdamW skips (no update, no weight decay), so the schedule needs no optimizer rebuild and
a resumed run picks the same stage from the step number alone.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator
from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS, Method, decay_groups
from tuneforge.methods.layers import decayed_rates, layer_depths
from tuneforge.recipe import MethodSection


class GradualUnfreezeMethod(MethodSection):
    """ULMFiT gradual unfreezing (Howard & Ruder 2018, https://arxiv.org/abs/1801.06146)."""

    name: Literal["gradual_unfreeze"] = "gradual_unfreeze"
    every_steps: int | None = Field(None, ge=1, description="unfreeze one more block every N optimizer steps")
    every_epochs: float | None = Field(None, gt=0, description="... or every N epochs (default 1 when neither is set)")
    start_layers: int = Field(0, ge=0, description="top blocks trainable from the start, besides the head")
    layer_lr_decay: float = Field(1.0, gt=0, le=1, description="combine with discriminative rates (ULMFiT: 1/2.6)")

    @model_validator(mode="after")
    def _one_schedule(self) -> GradualUnfreezeMethod:
        if self.every_steps is not None and self.every_epochs is not None:
            raise ValueError("set every_steps or every_epochs, not both")
        return self


@METHODS.register("gradual_unfreeze", config=GradualUnfreezeMethod)
class GradualUnfreeze(Method[GradualUnfreezeMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        self._depths, self._n_blocks = layer_depths(model)
        self.on_step(model, 0, 1)
        return model

    def trainable_names(self, model: nn.Module) -> set[str]:
        return {n for n, _ in model.named_parameters()}

    def lowest_trainable_depth(self, step: int, steps_per_epoch: int) -> int:
        """Depth of the lowest unfrozen layer at ``step`` (L + 1 = head only, 0 = everything)."""
        every = self.cfg.every_steps or max(1, math.ceil((self.cfg.every_epochs or 1.0) * steps_per_epoch))
        unfrozen_blocks = self.cfg.start_layers + step // every
        return max(0, self._n_blocks + 1 - unfrozen_blocks)

    def on_step(self, model: nn.Module, step: int, steps_per_epoch: int) -> None:
        lowest = self.lowest_trainable_depth(step, steps_per_epoch)
        for name, p in model.named_parameters():
            p.requires_grad_(self._depths[name] >= lowest)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        rates = decayed_rates(model, lr, self.cfg.layer_lr_decay)
        return decay_groups([(p, rates[n]) for n, p in model.named_parameters()], weight_decay)
