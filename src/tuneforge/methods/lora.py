"""LoRA and its variants through peft.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) trains low-rank ``A``/``B`` matrices beside frozen
weights; DoRA (Liu et al. 2024, https://arxiv.org/abs/2402.09353) also learns each column's magnitude;
rsLoRA (Kalajdzievski 2023, https://arxiv.org/abs/2312.03732) scales updates by alpha / sqrt(r) so that a
higher rank still learns. ``rank_pattern`` / ``alpha_pattern`` give chosen modules their own rank.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from peft import LoraConfig, prepare_model_for_kbit_training
from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS
from tuneforge.accel.lora_dropout import fold_lora_dropout
from tuneforge.methods.peft_base import PeftMethod, peft_task_type, untrained_pooler
from tuneforge.errors import ConfigError
from tuneforge.extras import require
from tuneforge.recipe import MethodSection


class LoraMethod(MethodSection):
    """Low-rank adapters through peft (Hu et al. 2021, https://arxiv.org/abs/2106.09685).

    ``use_dora`` splits each update into magnitude and direction (DoRA, Liu et al. 2024,
    https://arxiv.org/abs/2402.09353); ``use_rslora`` scales by alpha / sqrt(r) instead of alpha / r so
    higher ranks keep learning (Kalajdzievski 2023, https://arxiv.org/abs/2312.03732).
    """

    name: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, description="rank of the update matrices")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt, or 'all-linear' for every linear layer but the head"
    )
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    rank_pattern: dict[str, int] = Field(default_factory=dict, description="rank per module name pattern, e.g. {v_proj: 32}")
    alpha_pattern: dict[str, float] = Field(default_factory=dict, description="alpha per module name pattern")
    quantize: Literal["4bit"] | None = Field(None, description="QLoRA: hold the frozen base in 4-bit NF4 "
                                              "(bitsandbytes, CUDA only; Dettmers et al. 2023)")


@METHODS.register("lora", config=LoraMethod)
class Lora(PeftMethod[LoraMethod]):
    def load_options(self, device: str) -> dict[str, Any]:
        """QLoRA (Dettmers et al. 2023, https://arxiv.org/abs/2305.14314): the frozen base loads as 4-bit NF4
        with double quantisation and bfloat16 compute, through bitsandbytes, which needs a CUDA GPU."""
        if self.cfg.quantize is None:
            return {}
        if device != "cuda" or not torch.cuda.is_available():
            raise ConfigError(f"method.quantize: 4bit (QLoRA) needs a CUDA GPU (bitsandbytes), and this run is on "
                              f"{device}; remove method.quantize to train plain LoRA here")
        require("bitsandbytes", "qlora")
        from transformers import BitsAndBytesConfig

        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.bfloat16)
        return {"quantization_config": config, "device_map": {"": torch.cuda.current_device()}}

    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        if self.cfg.quantize is not None:  # norms in float32, inputs that carry gradients into the adapters
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        wrapped = super().prepare(model, head)
        fold_lora_dropout(wrapped)  # the same dropout, drawn and applied faster (methods/lora_dropout.py)
        return wrapped

    def peft_config(self, model: PreTrainedModel, head: str) -> LoraConfig:
        return LoraConfig(
            r=self.cfg.r,
            lora_alpha=self.cfg.alpha,
            lora_dropout=self.cfg.dropout,
            target_modules=self.cfg.target_modules,
            task_type=peft_task_type(head),
            modules_to_save=untrained_pooler(model, head) or None,
            use_dora=self.cfg.use_dora,
            use_rslora=self.cfg.use_rslora,
            rank_pattern=dict(self.cfg.rank_pattern),
            alpha_pattern=dict(self.cfg.alpha_pattern),
        )
