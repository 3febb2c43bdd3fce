"""Discriminative fine-tuning: every weight trains, lower layers more gently.

Howard & Ruder (2018, https://arxiv.org/abs/1801.06146) give each layer its own rate, decaying from the
top down; ELECTRA (Clark et al. 2020) calls it layer-wise learning-rate decay. Lower layers hold general
features that a full-strength update would overwrite; the head, new and random, often wants a higher rate
than the body (``head_lr``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS, Method, decay_groups
from tuneforge.methods.layers import decayed_rates
from tuneforge.recipe import MethodSection


class DiscriminativeMethod(MethodSection):
    """Full fine-tuning with layer-wise learning-rate decay (Howard & Ruder 2018; Clark et al. 2020)."""

    name: Literal["discriminative"] = "discriminative"
    layer_lr_decay: float = Field(0.8, gt=0, le=1, description="each block's rate = the rate of the block above x this")
    head_lr: float | None = Field(None, gt=0, le=10, description="the head's own rate; default train.lr")


@METHODS.register("discriminative", config=DiscriminativeMethod)
class Discriminative(Method[DiscriminativeMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        rates = decayed_rates(model, lr, self.cfg.layer_lr_decay, self.cfg.head_lr)
        return decay_groups([(p, rates[n]) for n, p in model.named_parameters()], weight_decay)
