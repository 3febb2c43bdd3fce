"""The frozen base weights under LoRA held in bfloat16 while training, and given back exactly afterwards.

Why: with LoRA the base projections never change, and they carry most of a step's FLOPs (their
forward and their input gradient). Where the hardware multiplies bfloat16 natively (AMX on recent
Xeons: about 6x float32's rate at SmolLM2's 576-wide shapes, measured in ``bench/speed.py``; bf16
tensor cores on GPUs), those products run in bfloat16 and the weights take half the memory. Unlike
bf16 autocast, nothing is re-cast per forward and everything else stays float32: the residual
stream, norms, attention, the adapters, their gradients and the loss. Only each frozen product's
inputs are rounded, as in any bf16 mixed-precision training.

The model must come back as it was: evaluation, merging and export after training read the base
weights, and a bf16-rounded base is not the model the user deploys. The float32 weights are spilled
to a scratch file in the run folder for the duration (not kept in memory, which would cancel the
saving) and read back bit-identical on exit, even when training fails.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from torch import nn


MADV_DONTNEED = 4
SPILL_PREFIX = ".frozen-base-"  # + host-pid-random: the float32 base while a run trains
ROW_MULTIPLE = 64  # CPU: rows of a low-precision product rounded up to this (see _cast_rows)
Spilled = tuple[int, str, torch.Size, torch.dtype]  # (base index, "weight" or "bias", shape, dtype), in file order


class LowPrecisionLinear(nn.Linear):
    """A frozen ``nn.Linear`` stored in a low-precision dtype that keeps its caller's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        # Under torch.compile the shared cast is not used: the compiler fuses the casts itself, and a
        # cache keyed on tensor identity is state it cannot guard on.
        shared = self.weight.dtype != x.dtype and not torch.compiler.is_compiling()
        out = frozen_linear(rows, self.weight, self.bias, cast_rows_once(x, self.weight.dtype) if shared else None)
        return out.view(*x.shape[:-1], out.shape[-1])


def frozen_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  cast: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for ``x`` (N, in), computed in ``weight``'s dtype, returned in ``x``'s.

    ``cast`` is ``x`` already cast (:func:`cast_rows_once`); without it, ``x`` is cast here.
    """
    if weight.dtype == x.dtype:
        return nn.functional.linear(x, weight, bias)
    cast = _cast_rows(x, weight.dtype) if cast is None else cast
    return nn.functional.linear(cast, weight, bias)[: x.shape[0]].to(x.dtype)


class _LastCast(threading.local):
    source: torch.Tensor | None = None
    version = -1
    result: torch.Tensor | None = None


_last_cast = _LastCast()


def cast_rows_once(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as (N, in) rows in ``dtype`` (see :func:`_cast_rows`), cast once for the layers that read it.

    Why: q, k and v (and gate and up) read the same input one after the other. Cast for each, that is
    three passes over it, and three copies kept for backward. The last cast is kept (with a reference
    to its source, so the memory cannot be reused by another tensor meanwhile) and given again while
    the same tensor, unchanged since (its version counter), comes back. :func:`forget_cast` drops it.
    """
    last = _last_cast
    if last.source is x and last.version == x._version and last.result is not None and last.result.dtype == dtype:
        return last.result
    result = _cast_rows(x.reshape(-1, x.shape[-1]), dtype)
    last.source, last.version, last.result = x, x._version, result
    return result


def forget_cast() -> None:
    """Drop the input kept by :func:`cast_rows_once` (at the end of training: no reference outlives it)."""
    _last_cast.source, _last_cast.version, _last_cast.result = None, -1, None


def frozen_input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``grad @ weight`` for ``grad`` (N, out): a frozen linear layer's input gradient, in ``grad``'s dtype."""
    if weight.dtype == grad.dtype:
        return grad @ weight
    return (_cast_rows(grad, weight.dtype) @ weight)[: grad.shape[0]].to(grad.dtype)


def _cast_rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (N, k) in ``dtype``; on a CPU, N of ROW_MULTIPLE or more is rounded up to a multiple of it.

    Why: oneDNN builds and caches a kernel per matmul shape, and a packed micro-batch has a different
    token count every time. With exact shapes, 300 steps of SmolLM2's four projection shapes grew the
    resident memory by 900 MB and ran 1.8x slower than with rows rounded to 64 (+39 MB).
    """
    n = x.shape[0]
    if x.device.type != "cpu" or n < ROW_MULTIPLE:  # few rows (decoding a batch): few shapes, padding would dominate
        return x.to(dtype)
    out = x.new_empty((-(-n // ROW_MULTIPLE) * ROW_MULTIPLE, x.shape[1]), dtype=dtype)
    out[:n].copy_(x)
    out[n:].zero_()
    return out


def frozen_lora_bases(model: nn.Module) -> list[nn.Linear]:
    """The plain, frozen ``nn.Linear`` layers under peft's LoRA layers."""
    bases = []
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(module, LoraLayer) and type(base) is nn.Linear and not base.weight.requires_grad \
                and (base.bias is None or not base.bias.requires_grad):
            bases.append(base)
    return bases


@contextmanager
def frozen_base_in(model: nn.Module, dtype: torch.dtype | None, spill_to: Path) -> Iterator[int]:
    """Within the block, the LoRA layers' frozen bases are ``dtype`` (None: unchanged); yields how many.

    ``spill_to`` is a folder (the run folder) that gets a temporary file of the float32 weights.
    """
    bases = frozen_lora_bases(model) if dtype is not None else []
    bases = [b for b in bases if b.weight.dtype != dtype]
    if not bases:
        yield 0
        return
    spill_to.mkdir(parents=True, exist_ok=True)
    remove_stale_spills(spill_to)
    folder = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=spill_to))
    written: list[Spilled] = []
    try:
        written = _spill(bases, folder / "base.bin")
        old = [t for b in bases for t in (b.weight, b.bias) if t is not None]
        for base in bases:
            _cast(base, dtype)
        release_file_pages(old, keep=list(model.state_dict().values()))
        del old
        yield len(bases)
    finally:
        forget_cast()
        if written:
            _restore(bases, folder / "base.bin", written)
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_spills(folder: Path) -> list[Path]:
    """Delete spill folders left in ``folder`` by killed processes of this host; returns them.

    A killed run never reaches the ``finally`` that removes its spill (a float32 copy of the base: 0.4 GB
    for a 135M model), and ``--resume`` spills afresh. A spill is named after its host and process id,
    so a live process's spill (another rank, another node on a shared disk) is never touched.
    """
    host = socket.gethostname()
    removed = []
    for spill in folder.glob(f"{SPILL_PREFIX}*"):
        parts = spill.name[len(SPILL_PREFIX):].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        shutil.rmtree(spill, ignore_errors=True)
        removed.append(spill)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


def _spill(bases: list[nn.Linear], path: Path) -> list[Spilled]:
    """Write each base's weight (and bias) to ``path``, raw, one after another; returns what was written.

    A scratch file this process alone reads back: no format, no copy of the whole base in memory at
    once (``safetensors.torch.save_file`` builds one), no memory map when reading (a mapped file's
    touched pages count as resident memory while it stays open).
    """
    written = []
    with path.open("wb") as f:
        for i, base in enumerate(bases):
            for kind, t in (("weight", base.weight), ("bias", base.bias)):
                if t is not None:
                    f.write(memoryview(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()))
                    written.append((i, kind, t.shape, t.dtype))
    return written


def _cast(base: nn.Linear, dtype: torch.dtype) -> None:
    base.weight = nn.Parameter(base.weight.detach().to(dtype), requires_grad=False)
    if base.bias is not None:
        base.bias = nn.Parameter(base.bias.detach().to(dtype), requires_grad=False)
    base.__class__ = LowPrecisionLinear


def _restore(bases: list[nn.Linear], path: Path, written: list[Spilled]) -> None:
    with path.open("rb") as f:
        for i, kind, shape, dtype in written:
            base = bases[i]
            t = torch.empty(shape, dtype=dtype)
            if f.readinto(memoryview(t.reshape(-1).view(torch.uint8).numpy())) != t.numel() * t.element_size():
                raise RuntimeError(f"the spilled base weights in {path} are truncated")
            setattr(base, kind, nn.Parameter(t.to(getattr(base, kind).device), requires_grad=False))
    for base in bases:
        base.__class__ = nn.Linear


def release_file_pages(tensors: list[torch.Tensor], keep: list[torch.Tensor]) -> int:
    """Give back the resident pages of ``tensors`` that lie in a file mapping; returns the bytes released.

    Why: transformers memory-maps a safetensors checkpoint and the weights are views into that
    mapping. Replacing a weight frees nothing while the other weights keep the mapping open, and the
    pages it touched stay resident. ``madvise(MADV_DONTNEED)`` drops them (a later read would fetch
    them from the file again). Only whole pages inside a tensor that no tensor in ``keep`` overlaps,
    and only file-backed ones: anonymous memory is freed with its tensor anyway. Linux only.
    """
    maps = Path("/proc/self/maps")
    if not maps.is_file() or not tensors:
        return 0
    files = []
    for line in maps.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[4] != "0":  # an inode: file-backed
            start, end = (int(x, 16) for x in fields[0].split("-"))
            files.append((start, end))
    kept = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in keep if t.device.type == "cpu"]
    page = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for t in tensors:
        lo, hi = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
        start, end = -(-lo // page) * page, hi // page * page
        if t.device.type != "cpu" or end <= start or not any(a <= lo and hi <= b for a, b in files):
            continue
        if any(a < end and start < b for a, b in kept):
            continue
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    return released
