"""The compressor interface and its registry.

A compressor turns a merged, plain transformers model (adapters already folded in) into a smaller
or faster one, and knows how to write its weights as safetensors and read them back. Reading back
goes through a *skeleton*: the architecture is rebuilt from the saved ``config.json`` (random
weights), the compressor gives it the compressed structure (quantised modules, pruned widths),
and the saved tensors are loaded into it. So a compressed folder never holds pickles and never
needs the uncompressed model to load.

A new method (for example knowledge distillation into a smaller student, once the methods
catalogue provides a distillation objective) is one subclass plus one ``@COMPRESSORS.register``
line: its ``apply`` would train the student with ``tuneforge.train.loop.fit`` (as pruning's
recovery step does in :mod:`tuneforge.compress.prune`) and return it; ``skeleton`` would build
the student from its own saved config.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from tuneforge.errors import UserError
from tuneforge.recipe import Recipe, Section
from tuneforge.registry import Registry
from tuneforge.tasks.base import Example, Task

MethodName = Literal["int8-dynamic", "weight-int8", "weight-int4", "prune-magnitude", "prune-structured"]


class CompressConfig(Section):
    """What ``tuneforge compress`` was asked to do (saved in ``compression.json``)."""

    method: MethodName
    sparsity: float = Field(0.3, gt=0, lt=1, description="pruning: share of weights (magnitude) or FFN neurons "
                            "(structured) removed")
    recovery_steps: int = Field(0, ge=0, description="pruning: optimizer steps of fine-tuning after pruning")
    recovery_lr: float = Field(2e-5, gt=0, le=1, description="pruning: learning rate of the recovery fine-tune")
    group_size: int = Field(32, ge=8, description="weight-int4: weights per quantisation group (scale)")
    latency_repeats: int = Field(3, ge=1, description="timed passes over the test split per model, alternating "
                                 "uncompressed and compressed; the median is reported")


def compress_config(values: CompressConfig | dict[str, Any]) -> CompressConfig:
    """Validate compression options; a bad one is a ``ConfigError`` naming the option."""
    from pydantic import ValidationError

    from tuneforge.errors import ConfigError

    if isinstance(values, CompressConfig):
        return values
    try:
        return CompressConfig(**values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid compression options: {problems}") from None


@dataclass
class Context:
    """What a compressor may use besides the model: the task and the run's training split."""

    recipe: Recipe
    task: Task
    train: list[Example]


class Compressor(ABC):
    """Base class of compression methods; subclasses register in ``COMPRESSORS``."""

    name: ClassVar[str]
    #: True when the saved tensors are quantised (they cannot be exported as a float HF folder)
    quantised: ClassVar[bool] = False

    def __init__(self, cfg: CompressConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Compress ``model`` (it may be changed in place) and return the compressed model."""

    def skeleton(self, model: nn.Module) -> nn.Module:
        """Give a freshly built float model (random weights) the structure of the compressed one."""
        return model

    def state(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Tensors and string metadata for one safetensors file."""
        return float_state(model)

    def load(self, model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        load_float_state(model, tensors, metadata)

    def summary(self, model: nn.Module) -> dict[str, Any]:
        """Facts about the compressed model for the report (sparsity reached, layers quantised)."""
        return {}


COMPRESSORS: Registry[type[Compressor]] = Registry("compression method")


def untie(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Plain tensors with tied ones stored once (safetensors refuses shared memory).

    A tensor whose storage was already seen (tied input and output embeddings) is left out and
    named in the returned ``{duplicate: original}`` map; the skeleton built from the same config
    ties it again. Tensor subclasses (quantised weights) are passed through untouched.
    """
    seen: dict[int, str] = {}
    kept: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    for name, tensor in state.items():
        if type(tensor) is torch.Tensor:
            ptr = tensor.untyped_storage().data_ptr()
            if ptr in seen and tensor.numel() > 0:
                tied[name] = seen[ptr]
                continue
            seen[ptr] = name
            tensor = tensor.detach().contiguous()
        kept[name] = tensor
    return kept, tied


def float_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, tied = untie(model.state_dict())
    return tensors, {"tied": json.dumps(tied)}


def load_float_state(model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                     assign: bool = False, owned: tuple[str, ...] = ()) -> None:
    """Load tensors into ``model``; every key must be given, tied, or start with a prefix in ``owned``
    (keys that the caller loads itself, such as quantised modules)."""
    tied = json.loads(metadata.get("tied", "{}"))
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=assign)
    missing = [k for k in missing if k not in tied and not k.startswith(owned)]
    if missing or unexpected:
        raise UserError(f"the compressed weights do not fit the saved config (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); was the folder edited by hand?")
    state = model.state_dict()
    for dup, orig in tied.items():
        if state[dup].data_ptr() != state[orig].data_ptr():
            raise UserError(f"{dup} should be tied to {orig}, but the model rebuilt from config.json does not tie them")


def get_compressor(cfg: CompressConfig) -> Compressor:
    """The registered method ``cfg.method`` (importing ``tuneforge.compress`` registers the built-in ones)."""
    return COMPRESSORS.get(cfg.method)(cfg)
