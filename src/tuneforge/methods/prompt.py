"""Soft prompts through peft: prompt tuning and prefix tuning.

Prompt tuning (Lester et al. 2021, https://arxiv.org/abs/2104.08691) learns ``num_virtual_tokens`` input
embeddings put before every input, optionally initialised from the embeddings of a text such as the task
instruction, which converges much faster than random vectors on small models. Prefix tuning (Li & Liang
2021, https://arxiv.org/abs/2101.00190) learns key/value prefixes for every layer; it needs a decoder's KV
cache. Both keep the whole model frozen and cannot be merged into the weights.
"""

from __future__ import annotations

from typing import Literal

from peft import PrefixTuningConfig, PromptTuningConfig, PromptTuningInit
from pydantic import Field
from transformers import PreTrainedModel

from tuneforge.errors import ConfigError
from tuneforge.methods.base import METHODS
from tuneforge.methods.peft_base import PeftMethod, peft_task_type
from tuneforge.recipe import MethodSection


class PromptTuningMethod(MethodSection):
    """Soft prompts through peft (Lester et al. 2021, https://arxiv.org/abs/2104.08691)."""

    name: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    init_text: str | None = Field(None, description="initialise the soft prompt from this text's embeddings")


class PrefixTuningMethod(MethodSection):
    """Prefix tuning through peft (Li & Liang 2021, https://arxiv.org/abs/2101.00190); decoders only."""

    name: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    projection: bool = Field(False, description="reparameterise the prefix through an MLP, as in the paper")


@METHODS.register("prompt_tuning", config=PromptTuningMethod)
class PromptTuning(PeftMethod[PromptTuningMethod]):
    mergeable = False

    def peft_config(self, model: PreTrainedModel, head: str) -> PromptTuningConfig:
        text = self.cfg.init_text
        return PromptTuningConfig(
            task_type=peft_task_type(head),
            num_virtual_tokens=self.cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=model.name_or_path if text else None,
        )


@METHODS.register("prefix_tuning", config=PrefixTuningMethod)
class PrefixTuning(PeftMethod[PrefixTuningMethod]):
    mergeable = False

    def peft_config(self, model: PreTrainedModel, head: str) -> PrefixTuningConfig:
        if head != "causal_lm":
            raise ConfigError("method prefix_tuning needs a decoder (it writes into the KV cache); "
                              "use prompt_tuning, lora or ia3 with an encoder")
        return PrefixTuningConfig(task_type=peft_task_type(head), num_virtual_tokens=self.cfg.num_virtual_tokens,
                                  prefix_projection=self.cfg.projection)
