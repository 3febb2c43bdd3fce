"""Changes to a loaded model that a recipe asks for before any method touches it.

- ``set_dropout`` overrides every dropout probability (modules and the attention dropout that
  attention functions read from the module or config), a regulariser users expect to control.
- ``keep_layers`` drops the upper transformer blocks, the simplest way to build a smaller student
  from its teacher's architecture for distillation (as DistilBERT initialised from every other layer,
  Sanh et al. 2019); the config is updated so a saved copy loads standalone.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from tuneforge.errors import ConfigError
from tuneforge.methods.base import transformer_blocks


def set_dropout(model: PreTrainedModel, p: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        for attr in ("attention_dropout", "dropout_prob"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, p)
    for key, value in list(model.config.to_dict().items()):
        if "dropout" in key and isinstance(value, float):
            setattr(model.config, key, p)


def keep_layers(model: PreTrainedModel, n: int) -> None:
    name, blocks = transformer_blocks(model)
    if n > len(blocks):
        raise ConfigError(f"model_layers: {n} is more than the model's {len(blocks)} transformer blocks")
    del blocks[n:]
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, n)
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:n]
