"""Feature extraction: freeze the pre-trained body, train the head (and optionally the top blocks).

Cheap and hard to over-fit, the classic transfer-learning baseline. What counts as "head" is
everything outside the model's body (``base_model_prefix``) plus a pooler, which sentence
encoders often ship untrained. For a decoder with tied input/output embeddings the head *is*
the embedding matrix, so it stays frozen unless ``train_embeddings`` is set.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS, Method, transformer_blocks
from tuneforge.recipe import FreezeMethod


def _is_head(name: str, model: PreTrainedModel) -> bool:
    prefix = getattr(model, "base_model_prefix", "")
    return (bool(prefix) and not name.startswith(prefix + ".")) or ".pooler." in f".{name}"


@METHODS.register("freeze")
class Freeze(Method[FreezeMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        blocks_name, blocks = transformer_blocks(model)
        k = min(self.cfg.trainable_layers, len(blocks))
        top = {f"{blocks_name}.{i}." for i in range(len(blocks) - k, len(blocks))}
        embeddings = model.get_input_embeddings().weight
        for name, p in model.named_parameters():
            after_blocks = k > 0 and _after_blocks(name, blocks_name)
            if _is_head(name, model) or any(name.startswith(t) for t in top) or after_blocks:
                p.requires_grad_(True)
            if p is embeddings:
                p.requires_grad_(self.cfg.train_embeddings)
        return model


def _after_blocks(name: str, blocks_name: str) -> bool:
    """Final norms sit beside the block list (``model.norm``) and belong to the top of the body."""
    parent = blocks_name.rsplit(".", 1)[0] if "." in blocks_name else ""
    return name.startswith(parent + ".") and "norm" in name.rsplit(".", 2)[-2] and not name.startswith(blocks_name)
