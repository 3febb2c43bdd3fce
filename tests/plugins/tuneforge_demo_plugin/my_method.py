"""``my_method``: train only the parameters whose name contains one of ``patterns`` (norms by default).

A cousin of BitFit (Ben Zaken et al. 2021, https://arxiv.org/abs/2106.10199), which trains the biases
only; here any parameters picked by name. The section class and the method live together and register
together, so the recipe validates ``method: {name: my_method, patterns: [...]}`` like a built-in method.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from tuneforge.errors import ConfigError
from tuneforge.methods.base import METHODS, Method
from tuneforge.recipe import MethodSection


class NamedParamsMethod(MethodSection):
    """Which parameters train, by a part of their name."""

    name: Literal["my_method"] = "my_method"
    patterns: list[str] = Field(default_factory=lambda: ["norm"], min_length=1)


@METHODS.register("my_method", config=NamedParamsMethod)
class NamedParams(Method[NamedParamsMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        hits = 0
        for name, p in model.named_parameters():
            p.requires_grad_(any(pattern in name for pattern in self.cfg.patterns))
            hits += p.requires_grad
        if not hits:
            raise ConfigError(f"method.patterns: no parameter name contains any of {self.cfg.patterns}")
        return model
