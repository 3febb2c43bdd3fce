"""Full fine-tuning: every weight trains. The strongest and the most memory-hungry method."""

from __future__ import annotations

from typing import Literal

from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS, Method
from tuneforge.recipe import MethodSection


class FullMethod(MethodSection):
    """Every weight trains."""

    name: Literal["full"] = "full"


@METHODS.register("full", config=FullMethod)
class Full(Method[FullMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
