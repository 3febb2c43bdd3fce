"""LoRA through peft (Hu et al. 2021, https://arxiv.org/abs/2106.09685).

Base weights stay frozen and bit-identical; only the low-rank ``A``/``B`` matrices (and, for a
classification head, the head itself, which peft keeps in ``modules_to_save``) train. The base
model for comparisons is the same network with its adapter switched off, so no second copy is
held in memory.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from tuneforge.methods.base import METHODS, Method
from tuneforge.recipe import LoraMethod


@METHODS.register("lora")
class Lora(Method[LoraMethod]):
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        task_type = TaskType.SEQ_CLS if head == "sequence_classification" else TaskType.CAUSAL_LM
        # peft trains the classification head itself for SEQ_CLS; a pooler feeding that head is often
        # untrained in sentence encoders (MiniLM), so it trains fully too.
        pooler = ["pooler"] if head != "causal_lm" and any(n.endswith("pooler") for n, _ in model.named_modules()) else []
        config = LoraConfig(
            r=self.cfg.r,
            lora_alpha=self.cfg.alpha,
            lora_dropout=self.cfg.dropout,
            target_modules=self.cfg.target_modules,
            task_type=task_type,
            modules_to_save=pooler or None,
        )
        return get_peft_model(model, config)

    def merge(self, model: nn.Module) -> PreTrainedModel:
        assert isinstance(model, PeftModel)
        return model.merge_and_unload()

    def save_extra(self, model: nn.Module, out_dir: Path) -> None:
        assert isinstance(model, PeftModel)
        model.save_pretrained(out_dir / "adapter", safe_serialization=True)
