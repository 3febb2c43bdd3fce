"""Feature extraction: freeze the pre-trained body, train the head (and optionally the top blocks).

Cheap and hard to over-fit, the classic transfer-learning baseline. What counts as "head" is
everything outside the model's body (``base_model_prefix``) plus a pooler, which sentence
encoders often ship untrained. For a decoder with tied input/output embeddings the head *is*
the embedding matrix, so it stays frozen unless ``train_embeddings`` is set.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS, Method
from tuneforge.methods.layers import is_head, layer_depths
from tuneforge.recipe import MethodSection


class FreezeMethod(MethodSection):
    """Feature extraction: the body is frozen, the head (and optionally the last k blocks) train."""

    name: Literal["freeze"] = "freeze"
    trainable_layers: int = Field(0, ge=0, description="how many of the top transformer blocks also train")
    train_embeddings: bool = False


@METHODS.register("freeze", config=FreezeMethod)
class Freeze(Method[FreezeMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        depths, n_blocks = layer_depths(model)
        lowest = n_blocks + 1 - min(self.cfg.trainable_layers, n_blocks)
        embeddings = model.get_input_embeddings().weight
        for name, p in model.named_parameters():
            in_top_blocks = lowest <= n_blocks and depths[name] >= lowest
            p.requires_grad_(is_head(name, model) or in_top_blocks)
            if p is embeddings:
                p.requires_grad_(self.cfg.train_embeddings)
        return model
