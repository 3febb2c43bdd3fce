"""Preflight: what a run will cost, checked before it costs anything.

Users of other tools find out about truncated answers, a silent CPU fallback or an out-of-memory
kill an hour in. The preflight reports device and dtype actually used, parameters, token counts
after templating, truncation and rows with no answer tokens, a peak-memory estimate from a
measured probe step (the longest batch, forward and backward) plus the optimizer state still to
come, and a time estimate from the probe's throughput. It refuses a run that would not fit.
"""

from __future__ import annotations

import math
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from torch import nn

from tuneforge.tasks.packing import pack_rows
from tuneforge.accel import training_forms
from tuneforge.errors import ConfigError, ResourceError
from tuneforge.methods.base import count_parameters
from tuneforge.infer import precision as cpu_support
from tuneforge.recipe import TrainConfig
from tuneforge.tasks.base import Encoded, Task, without_ddp


@dataclass
class Preflight:
    device: str
    dtype: str
    mixed_precision: str
    parameters: dict[str, int]
    data: dict[str, Any]
    memory: dict[str, float] = field(default_factory=dict)
    throughput_tokens_per_s: float | None = None
    estimated_train_seconds: float | None = None
    steps: int = 0
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    """split -> where its rows came from (``run.splits.split_sources``): files read, or the share carved from train"""

    def lines(self) -> list[str]:
        p, d = self.parameters, self.data
        share = 100.0 * p["trainable"] / max(p["total"], 1)
        out = [
            f"device            {self.device} (weights {self.dtype}, mixed precision {self.mixed_precision})",
            f"parameters        {p['total']:,} total, {p['trainable']:,} trainable ({share:.2f}%)",
            f"train rows        {d['rows']:,}  validation {d['validation_rows']:,}  test {d['test_rows']:,}",
            *(f"  {name + ' from':<16}{where}" for name, where in self.sources.items()),
            f"train tokens      {d['tokens']:,} after templating, {d['loss_tokens']:,} carry loss; "
            f"longest {d['longest']} (max_length {d['max_length']})",
            f"truncated rows    {d['truncated']:,}" + ("  <- raise train.max_length?" if d["truncated"] else ""),
            f"no answer tokens  {d['zero_answer']:,}" + ("  (left out of training)" if d["zero_answer"] else ""),
            f"optimizer steps   {self.steps:,}",
        ]
        if self.memory:
            out.append(f"peak memory       ~{self.memory['estimate_gb']:.1f} GB estimated "
                       f"of {self.memory['available_gb']:.1f} GB available")
        if self.throughput_tokens_per_s:
            eta = self.estimated_train_seconds or 0.0
            out.append(f"throughput        ~{self.throughput_tokens_per_s:,.0f} tokens/s -> training ~{_duration(eta)}")
        out.extend(f"WARNING: {w}" for w in self.warnings)
        return out


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def resolve_device(cfg: TrainConfig) -> tuple[str, list[str]]:
    """The device that will really be used, with a loud warning when a GPU was asked for and is missing."""
    warnings: list[str] = []
    has_cuda = torch.cuda.is_available()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if cfg.device == "cuda" and not has_cuda:
        warnings.append("train.device is 'cuda' but no CUDA GPU is visible: running on the CPU, which is much slower")
        return "cpu", warnings
    if cfg.device == "mps" and not has_mps:
        warnings.append("train.device is 'mps' but Apple MPS is not available: running on the CPU")
        return "cpu", warnings
    if cfg.device == "auto":
        return ("cuda" if has_cuda else "mps" if has_mps else "cpu"), warnings
    return cfg.device, warnings


def resolve_precision(cfg: TrainConfig, device: str) -> tuple[str, list[str]]:
    """accelerate's mixed-precision mode. Weights stay float32; autocast does the rest.

    "auto" is bf16 on a GPU that supports it and full float32 elsewhere: bf16 matmuls on CPUs
    without AMX/AVX-512 run about 25x slower than float32 (measured on the project's machines). Even
    with AMX, where a large bf16 matmul runs 6x float32's rate, bf16 autocast made SmolLM2-135M LoRA
    training 10% slower, 35% larger in memory and worse in validation loss (bench/RESULTS.md): its
    matmuls are small and autocast re-casts every frozen weight at every forward. So a CPU gets bf16
    only when the recipe asks for it.
    """
    warnings: list[str] = []
    if cfg.dtype == "auto":
        if device == "cuda":
            return ("bf16" if torch.cuda.is_bf16_supported() else "fp16"), warnings
        return "no", warnings
    mode = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[cfg.dtype]
    if device == "cpu" and mode != "no":
        fast = cpu_support.cpu_has_fast_bf16()
        if fast is False:
            raise ConfigError(f"train.dtype {cfg.dtype} on this CPU: it has no AVX-512-BF16 or AMX, so bfloat16 "
                              "matmuls run about 25x slower than float32 here; use train.dtype float32 (or auto)")
        if fast is None:
            warnings.append(f"train.dtype {cfg.dtype} on a CPU: often far slower than float32 without AMX; check the "
                            "throughput below")
        if mode == "fp16":
            warnings.append("float16 autocast is not supported on CPU; using bfloat16")
            mode = "bf16"
    return mode, warnings


def resolve_frozen_dtype(cfg: TrainConfig, device: str) -> torch.dtype | None:
    """The dtype the LoRA layers' frozen base weights train in (None: as loaded).

    "auto" is bfloat16 on a CPU with AMX only, where it was measured: SmolLM2-135M LoRA trained 1.25x
    faster in less memory with the same validation loss (``bench/RESULTS.md``). Without AMX, bf16
    matmuls are slower than float32 on a CPU. A GPU already multiplies in bf16 under autocast
    (``train.dtype`` auto), so "auto" leaves its weights alone; ``bfloat16`` there also halves them.
    """
    if cfg.speed.frozen_dtype == "float32":
        return None
    if cfg.speed.frozen_dtype == "bfloat16":
        if device == "cpu" and cpu_support.cpu_has_fast_bf16() is False:
            raise ConfigError("train.speed.frozen_dtype bfloat16 on this CPU: it has no AVX-512-BF16 or AMX, so "
                              "bfloat16 matmuls run about 25x slower than float32 here; use train.speed.frozen_dtype "
                              "auto or float32")
        return torch.bfloat16
    return torch.bfloat16 if device == "cpu" and "amx_bf16" in cpu_support.cpu_flags() else None


def data_stats(train: list[Encoded], n_val: int, n_test: int, max_length: int) -> dict[str, Any]:
    lengths = [len(e.input_ids) for e in train]
    return {
        "rows": len(train),
        "validation_rows": n_val,
        "test_rows": n_test,
        "tokens": sum(lengths),
        "loss_tokens": sum(e.n_answer for e in train),
        "longest": max(lengths, default=0),
        "max_length": max_length,
        "truncated": sum(e.truncated for e in train),
        "zero_answer": sum(e.n_answer == 0 for e in train),
    }


def _peak_bytes(device: str) -> float:
    if device == "cuda":
        return float(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _available_bytes(device: str) -> float:
    if device == "cuda":
        return float(torch.cuda.get_device_properties(0).total_memory)
    rss = psutil.Process().memory_info().rss
    return float(psutil.virtual_memory().available + rss)


def probe(model: nn.Module, task: Task, train: list[Encoded], cfg: TrainConfig, device: str,
          autocast: Any) -> tuple[float, float]:
    """Forward+backward on the longest batch, twice; returns (tokens/s of the 2nd, peak bytes).

    The model is in the forms training puts it in (``tuneforge.accel``: fused LoRA layers, the frozen
    base's dtype, packed attention, compact activations), so the figures describe the run. Gradients
    are dropped afterwards and no optimizer step is taken: the weights are unchanged.
    """
    longest = worst_micro_batch(train, cfg)
    batch = {k: v.to(device) for k, v in task.collate(longest).items()}
    tokens = sum(len(e.input_ids) for e in longest)
    model.train()
    seconds = math.inf
    forms = {"frozen_dtype": resolve_frozen_dtype(cfg, device), "per_example": cfg.privacy is not None}
    with tempfile.TemporaryDirectory(prefix="tuneforge-probe-") as spill, \
            training_forms(without_ddp(model), cfg.speed, spill_to=Path(spill), **forms):
        for _ in range(2):
            start = time.perf_counter()
            with autocast():
                loss, _ = task.loss(model, batch, training=True)
            loss.backward()
            seconds = time.perf_counter() - start
    peak = _peak_bytes(device)
    model.zero_grad(set_to_none=True)
    return tokens / seconds, peak


def worst_micro_batch(train: list[Encoded], cfg: TrainConfig) -> list[Encoded]:
    """The largest micro-batch training can meet: the longest examples, capped as the loop caps them.

    With ``micro_batch_tokens`` this is the first micro-batch the loop's split (first-fit decreasing,
    ``tasks.packing.pack_rows``) makes of the longest possible step.
    """
    ranked = sorted(train, key=lambda e: len(e.input_ids), reverse=True)
    budget = cfg.speed.micro_batch_tokens
    if budget is None:
        return ranked[: cfg.batch_size]
    step = ranked[: cfg.batch_size * cfg.grad_accum]
    return [step[i] for i in pack_rows([len(e.input_ids) for e in step], budget)[0]]


def run_preflight(*, model: nn.Module, task: Task, train: list[Encoded], n_val: int, n_test: int,
                  cfg: TrainConfig, device: str, precision: str, steps: int, warnings: list[str],
                  autocast: Any, measure: bool = True, sources: dict[str, str] | None = None) -> Preflight:
    params = count_parameters(model)
    pre = Preflight(device=device, dtype="float32", mixed_precision=precision, parameters=params,
                    data=data_stats(train, n_val, n_test, cfg.max_length), steps=steps, warnings=list(warnings),
                    sources=dict(sources or {}))
    if n_test == 0:
        pre.warnings.append("no test rows: nothing will be scored; give data.test or raise data.split.test")
    if n_val == 0:
        pre.warnings.append("no validation rows: no validation loss, early stopping or best-checkpoint choice")
    if pre.data["truncated"]:
        pre.warnings.append(f"{pre.data['truncated']} training rows are longer than train.max_length "
                            f"({cfg.max_length}) and are cut")
    if not measure or not train:
        return pre
    tokens_per_s, peak = probe(model, task, train, cfg, device, autocast)
    optimizer_bytes = 2 * 4 * params["trainable"]  # AdamW: two float32 moments per trainable weight
    estimate = peak + optimizer_bytes
    available = _available_bytes(device)
    pre.memory = {"estimate_gb": estimate / 1e9, "available_gb": available / 1e9}
    pre.throughput_tokens_per_s = tokens_per_s
    per_step_tokens = pre.data["tokens"] / max(1, len(train)) * cfg.batch_size * cfg.grad_accum
    pre.estimated_train_seconds = steps * per_step_tokens / tokens_per_s
    if estimate > 0.95 * available:
        raise ResourceError(
            f"this run needs about {estimate / 1e9:.1f} GB but only {available / 1e9:.1f} GB is available on "
            f"{device}; lower train.batch_size (now {cfg.batch_size}) or train.max_length (now {cfg.max_length}), "
            "set train.gradient_checkpointing: true, or use method lora"
        )
    return pre
