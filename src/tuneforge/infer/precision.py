"""The dtype a model decodes and scores in: bfloat16 where the CPU multiplies it natively, else as loaded.

Why: scoring (DPO/reward held-out log-probabilities, label scoring, perplexity) runs hundreds of
tokens per forward, so its products are bound by arithmetic, and on CPUs with AMX or AVX-512-BF16 a
bfloat16 product runs natively at several times float32's rate: held-out DPO scoring of 200
hh_harmless pairs on SmolLM2 took 0.18x the float32 time, with the same preferred answer in 199 of
200 (``bench/INFERENCE_RESULTS.md``). Decoding runs one token per row per step; there bfloat16 was
measured no faster at batch 1 (0.93x) and within noise at batch 16, while changing most greedy
answers, so "auto" decodes in the model's own dtype. Without those instructions bfloat16 matmuls are
emulated and much slower than float32, so "auto" keeps float32 there, and on GPUs leaves the model
as loaded.

The cast lasts for one call (:func:`weights_in`): each parameter's float32 tensor is kept aside and
put back on exit, so the model that is trained further, merged or exported afterwards is bit for bit
the one that came in. Everything runs in the chosen dtype (as after ``model.to(dtype)``), so the
answers equal transformers' ``generate`` on the same model in the same dtype, not float32's answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from tuneforge.errors import ConfigError
from tuneforge.recipe import EvalDtype as InferDtype

Work = Literal["score", "decode"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: whether "auto" takes bfloat16 on a CPU that multiplies it natively, per kind of work (measured, see above)
AUTO_BF16: dict[str, bool] = {"score": True, "decode": False}


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


def resolve_dtype(choice: InferDtype, device: torch.device, work: Work) -> torch.dtype | None:
    """The dtype ``work`` runs in for ``choice`` on ``device`` (None: the model's own, unchanged)."""
    if choice == "auto":
        return torch.bfloat16 if AUTO_BF16[work] and device.type == "cpu" and cpu_has_fast_bf16() else None
    if choice == "bfloat16" and device.type == "cpu" and cpu_has_fast_bf16() is False:
        raise ConfigError("eval.dtype bfloat16 on this CPU: it has no AVX-512-BF16 or AMX, so bfloat16 matmuls run "
                          "far slower than float32 here; use eval.dtype auto or float32")
    return DTYPES[choice]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def weights_in(model: nn.Module, choice: InferDtype, work: Work) -> Iterator[torch.dtype]:
    """Within the block every floating parameter of ``model`` is in ``choice``'s dtype for ``work``; yields it.

    The original tensors are kept and put back on exit (even on error), so nothing is rounded for
    good. Parameters already in the dtype (a LoRA base held in bfloat16 while training) are left.
    """
    dtype = resolve_dtype(choice, model_device(model), work)
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
