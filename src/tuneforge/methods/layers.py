"""Where each parameter sits in the depth of the network, for methods that treat layers differently.

Layer freezing, gradual unfreezing and discriminative learning rates all need the same map: the
embeddings (and anything else below the first block) at depth 0, transformer block ``i`` at depth
``i + 1``, and the head with the final norm and pooler on top at depth ``L + 1``. It is read from
the module tree (the longest ``ModuleList`` is the block stack), so it works for any architecture
transformers builds, encoder or decoder, without a per-model table.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import transformer_blocks


def is_head(name: str, model: PreTrainedModel) -> bool:
    """Outside the model's body (``base_model_prefix``), or a pooler (often untrained in sentence encoders)."""
    prefix = getattr(model, "base_model_prefix", "")
    return (bool(prefix) and not name.startswith(prefix + ".")) or ".pooler." in f".{name}"


def _after_blocks(name: str, blocks_name: str) -> bool:
    """Final norms sit beside the block list (``model.norm``) and belong to the top of the body."""
    parent = blocks_name.rsplit(".", 1)[0] if "." in blocks_name else ""
    return name.startswith(parent + ".") and "norm" in name.rsplit(".", 2)[-2] and not name.startswith(blocks_name)


def layer_depths(model: PreTrainedModel) -> tuple[dict[str, int], int]:
    """Depth of every parameter (0 = embeddings, 1..L = blocks, L + 1 = head and final norm) and L."""
    blocks_name, blocks = transformer_blocks(model)
    n_blocks = len(blocks)
    depths: dict[str, int] = {}
    for name, _ in model.named_parameters():
        if name.startswith(blocks_name + "."):
            depths[name] = int(name[len(blocks_name) + 1 :].split(".", 1)[0]) + 1
        elif is_head(name, model) or _after_blocks(name, blocks_name):
            depths[name] = n_blocks + 1
        else:
            depths[name] = 0
    return depths, n_blocks


def decayed_rates(model: nn.Module, lr: float, decay: float, head_lr: float | None = None) -> dict[str, float]:
    """Layer-wise learning-rate decay: the top block gets ``lr``, each block below ``decay`` times the one above.

    The embeddings sit one step below the first block; the head gets ``head_lr`` (default ``lr``).
    """
    depths, n_blocks = layer_depths(model)  # type: ignore[arg-type]
    top = n_blocks + 1
    return {n: (head_lr or lr) if d == top else lr * decay ** (n_blocks - d) for n, d in depths.items()}
