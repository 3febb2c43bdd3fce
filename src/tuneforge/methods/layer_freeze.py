"""Layer freezing: the bottom of the network keeps its pre-trained weights, the top adapts.

Lower layers hold general features (Yosinski et al. 2014, https://arxiv.org/abs/1411.1792), so freezing the
embeddings and the first k blocks saves optimizer memory and guards them against forgetting while the
upper blocks and the head fit the task. ``modules`` freezes any further parameters by name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from tuneforge.errors import ConfigError
from tuneforge.methods.base import METHODS, Method
from tuneforge.methods.layers import layer_depths
from tuneforge.recipe import MethodSection


class LayerFreezeMethod(MethodSection):
    """Freeze the embeddings and the first ``frozen_layers`` blocks (and any named modules); the rest trains."""

    name: Literal["layer_freeze"] = "layer_freeze"
    frozen_layers: int = Field(2, ge=0, description="how many of the bottom transformer blocks stay frozen")
    freeze_embeddings: bool = True
    modules: list[str] = Field(default_factory=list,
                               description="also freeze parameters whose name contains one of these strings")


@METHODS.register("layer_freeze", config=LayerFreezeMethod)
class LayerFreeze(Method[LayerFreezeMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        depths, n_blocks = layer_depths(model)
        if self.cfg.frozen_layers >= n_blocks:
            raise ConfigError(f"method.frozen_layers: {self.cfg.frozen_layers} would freeze all {n_blocks} blocks; "
                              f"use at most {n_blocks - 1}, or method `freeze` to train only the head")
        unmatched = [m for m in self.cfg.modules if not any(m in n for n in depths)]
        if unmatched:
            raise ConfigError(f"method.modules: no parameter name contains {unmatched}; "
                              "see the names with `python -c 'print([n for n, _ in model.named_parameters()])'`")
        embeddings = model.get_input_embeddings().weight
        for name, p in model.named_parameters():
            frozen = 1 <= depths[name] <= self.cfg.frozen_layers or any(m in name for m in self.cfg.modules)
            if p is embeddings or depths[name] == 0:
                frozen = frozen or self.cfg.freeze_embeddings
            p.requires_grad_(not frozen)
        return model
