"""Full fine-tuning: every weight trains. The strongest and the most memory-hungry method."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS, Method
from tuneforge.recipe import FullMethod


@METHODS.register("full")
class Full(Method[FullMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
