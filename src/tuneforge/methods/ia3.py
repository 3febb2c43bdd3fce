"""(IA)^3 through peft (Liu et al. 2022, https://arxiv.org/abs/2205.05638).

Learned vectors rescale keys, values and the feed-forward activations: about a tenth of LoRA's trainable
parameters at r=8, and mergeable into the weights like LoRA.
"""

from __future__ import annotations

from typing import Literal

from peft import IA3Config
from pydantic import Field
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS
from tuneforge.methods.peft_base import PeftMethod, peft_task_type, untrained_pooler
from tuneforge.recipe import MethodSection


class IA3Method(MethodSection):
    """(IA)^3 through peft (Liu et al. 2022, https://arxiv.org/abs/2205.05638): learned rescaling vectors."""

    name: Literal["ia3"] = "ia3"
    target_modules: list[str] | None = Field(None, description="default: peft's choice for the architecture")
    feedforward_modules: list[str] | None = Field(None, description="subset of target_modules that are feed-forward")


@METHODS.register("ia3", config=IA3Method)
class IA3(PeftMethod[IA3Method]):
    def peft_config(self, model: PreTrainedModel, head: str) -> IA3Config:
        return IA3Config(
            task_type=peft_task_type(head),
            target_modules=self.cfg.target_modules,
            feedforward_modules=self.cfg.feedforward_modules,
            modules_to_save=untrained_pooler(model, head) or None,
        )
