"""The speed layer: how a training step runs fast and small, set by the recipe's ``train.speed`` section.

The loop and the preflight talk to this package only through the names below; the modules behind them
are the forms themselves (fused LoRA layers, a low-precision frozen base, gated MLPs, packed attention,
compact saved activations, the chunked fused loss) and the process allocator and heap.

- :func:`training_forms` (context manager): the model in every form ``train.speed`` asks for, undone on exit.
- :func:`compile_blocks`: ``train.speed.compile``, regional ``torch.compile`` of the transformer blocks.

The names are loaded on first use: ``tuneforge.accel.allocator`` must be importable before torch is
(the ``tuneforge`` command re-executes itself with the allocator preloaded before anything heavy loads).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneforge.accel.modes import compile_blocks, training_forms

__all__ = ["compile_blocks", "training_forms"]


def __getattr__(name: str) -> Any:
    """The public names, imported from ``accel.modes`` when first asked for (torch and peft are heavy)."""
    if name in __all__:
        return getattr(import_module("tuneforge.accel.modes"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
