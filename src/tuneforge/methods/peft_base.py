"""What every peft-backed method shares: wrapping, merging and the adapter folder.

peft (https://github.com/huggingface/peft) already implements the adapters carefully (initialisation,
merging, saving in a format other tools read), so a tuneforge PEFT method only builds the right
``PeftConfig``. The base weights stay frozen and bit-identical; the base model for comparisons is the same
network with its adapter switched off, so no second copy is held in memory.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from peft import PeftConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from tuneforge.errors import UserError
from tuneforge.methods.base import C, Method


def peft_task_type(head: str) -> TaskType:
    return TaskType.SEQ_CLS if head == "sequence_classification" else TaskType.CAUSAL_LM


def untrained_pooler(model: PreTrainedModel, head: str) -> list[str]:
    """peft trains a classification head itself; a pooler feeding it is often untrained in sentence
    encoders (MiniLM), so it trains fully too. Named by its linear layer: peft's (IA)^3 merge fails on a
    saved module without a ``weight`` (peft 0.21)."""
    if head == "causal_lm" or not any(n.endswith("pooler.dense") for n, _ in model.named_modules()):
        return []
    return ["pooler.dense"]


class PeftMethod(Method[C]):
    """Base of peft methods: subclasses say which ``PeftConfig`` to build."""

    mergeable = True

    @abstractmethod
    def peft_config(self, model: PreTrainedModel, head: str) -> PeftConfig: ...

    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        return get_peft_model(model, self.peft_config(model, head))

    def merge(self, model: nn.Module) -> PreTrainedModel:
        assert isinstance(model, PeftModel)
        if not self.mergeable:
            raise UserError(f"a {self.cfg.name} adapter cannot be folded into the weights (it adds virtual tokens); "
                            "use the run's model/adapter folder with peft's PeftModel.from_pretrained instead")
        return model.merge_and_unload()

    def save_extra(self, model: nn.Module, out_dir: Path) -> None:
        assert isinstance(model, PeftModel)
        model.save_pretrained(str(out_dir / "adapter"), safe_serialization=True)
