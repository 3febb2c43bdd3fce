"""The dtype a model decodes and scores in: bfloat16 where the CPU multiplies it natively, else as loaded.

Why: decoding on a CPU reads every weight once per step for a handful of rows, so a step costs about
what reading the weights costs. In bfloat16 they are half the bytes, and on CPUs with AMX or
AVX-512-BF16 the products themselves run natively (measured on SmolLM2-135M in
``bench/INFERENCE_RESULTS.md``). Without those instructions bfloat16 matmuls are emulated and much
slower than float32, so "auto" keeps float32 there, and on GPUs leaves the model as loaded.

The cast lasts for one call (:func:`weights_in`): each parameter's float32 tensor is kept aside and
put back on exit, so the model that is trained further, merged or exported afterwards is bit for bit
the one that came in. Everything runs in the chosen dtype (as after ``model.to(dtype)``), so the
answers equal transformers' ``generate`` on the same model in the same dtype, not float32's answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from tuneforge.errors import ConfigError
from tuneforge.recipe import EvalDtype as InferDtype

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where unknown)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in cpuinfo.read_text().splitlines()
                 if line.startswith("flags")), set())


def cpu_has_fast_bf16() -> bool | None:
    """Whether the CPU has native bfloat16 matmul instructions (AVX-512-BF16 or AMX); None where unknown."""
    flags = cpu_flags()
    if not flags:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(choice: InferDtype, device: torch.device) -> torch.dtype | None:
    """The dtype to decode in for ``choice`` on ``device`` (None: the model's own, unchanged)."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None
    if choice == "bfloat16" and device.type == "cpu" and cpu_has_fast_bf16() is False:
        raise ConfigError("eval.dtype bfloat16 on this CPU: it has no AVX-512-BF16 or AMX, so bfloat16 matmuls run "
                          "far slower than float32 here; use eval.dtype auto or float32")
    return DTYPES[choice]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def weights_in(model: nn.Module, choice: InferDtype) -> Iterator[torch.dtype]:
    """Within the block every floating parameter of ``model`` is in ``choice``'s dtype; yields the dtype.

    The original tensors are kept and put back on exit (even on error), so nothing is rounded for
    good. Parameters already in the dtype (a LoRA base held in bfloat16 while training) are left.
    """
    dtype = resolve_dtype(choice, model_device(model))
    params = [p for p in model.parameters() if p.is_floating_point()]
    if dtype is None:
        yield params[0].dtype if params else torch.float32
        return
    kept = [(p, p.data) for p in params if p.dtype != dtype]
    try:
        for p, data in kept:
            p.data = data.to(dtype)
        yield dtype
    finally:
        for p, data in kept:
            p.data = data
