"""Checkpoints that a killed run resumes from.

A checkpoint is a folder ``checkpoints/step-NNNNNN`` with the trainable tensors (safetensors),
the optimizer and scheduler state (``optimizer.pt``, read back with ``weights_only=True`` so no
arbitrary object is ever unpickled) and ``state.json``. It is written under a temporary name and
renamed, so a kill mid-write leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneforge.methods.base import Method
from tuneforge.rundir import RunDir, write_json_atomic


def _step_dirs(run: RunDir) -> list[Path]:
    if not run.checkpoints.is_dir():
        return []
    return sorted(p for p in run.checkpoints.glob("step-*") if p.is_dir() and (p / "state.json").is_file())


def latest_checkpoint(run: RunDir) -> Path | None:
    dirs = _step_dirs(run)
    return dirs[-1] if dirs else None


def save_checkpoint(run: RunDir, state: Any, *, model: nn.Module, method: Method[Any],
                    optimizer: torch.optim.Optimizer, scheduler: Any) -> Path:
    final = run.checkpoints / f"step-{state.step:06d}"
    tmp = run.checkpoints / f".tmp-step-{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run.save_trainable(tmp, method.trainable_state(model))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    write_json_atomic(tmp / "state.json", dataclasses.asdict(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def load_checkpoint(folder: Path, *, model: nn.Module, method: Method[Any],
                    optimizer: torch.optim.Optimizer, scheduler: Any) -> Any:
    from tuneforge.train.loop import TrainState

    method.load_trainable(model, RunDir.load_trainable(folder))
    extra = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    return TrainState(**json.loads((folder / "state.json").read_text(encoding="utf-8")))


def prune_checkpoints(run: RunDir, keep: int) -> None:
    for old in _step_dirs(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
