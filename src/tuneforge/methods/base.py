"""The method interface: what trains, and how its weights are saved, reloaded and merged.

A method never subclasses or copies the training loop; it prepares the model (freezing,
wrapping in adapters) and the loop trains whatever ``requires_grad``. Saving only the trainable
tensors keeps checkpoints small for adapters and heads, and makes reloading uniform: build the
base model, ``prepare`` it again, load the tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn
from transformers import PreTrainedModel

from tuneforge.errors import TuneforgeError
from tuneforge.recipe import MethodSection
from tuneforge.registry import Registry

C = TypeVar("C", bound=MethodSection)


class Method(ABC, Generic[C]):
    """Base class of fine-tuning methods; subclasses register in ``METHODS``."""

    def __init__(self, cfg: C) -> None:
        self.cfg = cfg

    @abstractmethod
    def prepare(self, model: PreTrainedModel, head: str) -> nn.Module:
        """Return the model to train, with ``requires_grad`` set on exactly what trains."""

    def load_options(self, device: str) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments the method needs on ``device`` (QLoRA: a 4-bit quantisation config)."""
        return {}

    def trainable_names(self, model: nn.Module) -> set[str]:
        """Parameters this method ever trains: what is saved, reloaded and given to the optimizer.

        By default the ones with ``requires_grad`` after ``prepare``; a method that unfreezes more
        as training goes (gradual unfreezing) names them all here.
        """
        return {n for n, p in model.named_parameters() if p.requires_grad}

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups; biases and norm weights (1-D tensors) get no weight decay, as in BERT and GPT-2."""
        names = self.trainable_names(model)
        return decay_groups([(p, lr) for n, p in model.named_parameters() if n in names], weight_decay)

    def on_step(self, model: nn.Module, step: int, steps_per_epoch: int) -> None:
        """Called before every optimizer step (also right after a resume); must depend on ``step`` only."""

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        names = self.trainable_names(model)
        return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if n in names}

    def load_trainable(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by ``trainable_state``; every name must match a trainable parameter."""
        params = dict(model.named_parameters())
        names = self.trainable_names(model)
        missing = [n for n in params if n in names and n not in state]
        unknown = [n for n in state if n not in params]
        if missing or unknown:
            raise TuneforgeError(
                f"saved weights do not fit this model (missing {missing[:3]}, unexpected {unknown[:3]}); "
                "was the run made with a different recipe?"
            )
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)

    def merge(self, model: nn.Module) -> PreTrainedModel:
        """A plain transformers model with the training folded in (for export)."""
        return model  # type: ignore[return-value]

    def save_extra(self, model: nn.Module, out_dir: Path) -> None:
        """Write method-specific artefacts that other tools read (a peft adapter folder)."""


METHODS: Registry[type[Method[Any]]] = Registry("method")


def decay_groups(params: list[tuple[nn.Parameter, float]], weight_decay: float) -> list[dict[str, Any]]:
    """One AdamW group per (learning rate, decays?) pair; 1-D tensors (biases, norms) never decay."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for p, lr in params:
        groups.setdefault((lr, p.ndim >= 2), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": weight_decay if decays else 0.0}
            for (lr, decays), ps in groups.items()]


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of transformer blocks: the longest ``ModuleList`` of repeated layers."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        raise TuneforgeError(f"cannot find the transformer blocks of {type(model).__name__}")
    return best


def get_method(cfg: Any) -> Method[Any]:
    import tuneforge.methods  # noqa: F401  (registers the built-in methods)

    return METHODS.get(cfg.name)(cfg)
