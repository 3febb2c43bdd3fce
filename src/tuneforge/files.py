"""Atomic, durable file writes: the one way tuneforge writes a file that must be whole or absent.

Every write goes to a temporary name in the same folder, is fsynced, renamed over the target and the
folder fsynced, so a crash or a power loss leaves the old file or the new one, never a renamed but
empty one. A bottom-layer module (it imports nothing of tuneforge): data preparation, training,
reports and run folders all write through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); platforms that cannot open a folder skip it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the file itself is already on disk
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name, fsync, rename over ``path``, fsync the folder: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors writes by path, so the temporary file is reopened to fsync it before the rename."""
    from safetensors.torch import save_file  # imports torch: only the callers that hold tensors pay for it

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp))
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk must not leave a half-written temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
