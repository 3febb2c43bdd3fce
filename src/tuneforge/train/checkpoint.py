"""Checkpoints that a killed run resumes from, and that are checked before they are trusted.

A checkpoint is a folder ``checkpoints/step-NNNNNN`` holding::

    trainable.safetensors   the trainable tensors
    optimizer.safetensors   every tensor of the optimizer and scheduler state (Adam moments, step counts)
    optimizer.json          the rest of that state (learning rates, betas, ...), tensors named by key
    state.json              the loop's TrainState
    manifest.json           sha256 and size of each file above; written last

Why no ``optimizer.pt``: ``torch.load`` is a pickle reader, and a pickle runs code on load, even with
``weights_only`` guarding it (its message suggests turning the guard off). Splitting a state dict
into tensors (safetensors) and plain values (JSON) stores an AdamW and LambdaLR state exactly, so a
resume stays bit-identical with no unpickling anywhere.

Why a manifest: a checkpoint can be truncated (full disk, power loss) or damaged after it was
written. ``resume_point`` walks the checkpoints newest first, checks every file against the
manifest, says which it skipped and why, and resumes from the newest that verifies.

A folder is written under ``.tmp-NAME``, fsynced and renamed, so a kill mid-write leaves the previous
checkpoint as the latest; a write that fails (full disk, permissions) removes its temporary folder
and ends in a ``UserError`` naming the folder and the cause.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuneforge.errors import UserError
from tuneforge.methods.base import Method
from tuneforge.run.folder import RunDir
from tuneforge.files import fsync_dir, fsync_file, write_text_atomic

TRAINABLE = "trainable.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
STATE = "state.json"
MANIFEST = "manifest.json"
#: the files every step checkpoint must hold (the manifest lists them)
STEP_FILES = (TRAINABLE, OPTIMIZER_TENSORS, OPTIMIZER_JSON, STATE)
TMP_PREFIX = ".tmp-"


# ----------------------------------------------------------------------------- state dicts without pickle
def split_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON-ready values, each tensor moved into ``tensors`` and replaced by ``{"tensor": key}``.

    Dicts become ``{"dict": [[key, value], ...]}`` (an optimizer's state is keyed by int) and tuples
    ``{"tuple": [...]}`` (AdamW's betas), so ``join_tensors`` gives back equal objects of equal types.

    >>> split_tensors({0: (0.9, 0.99), "lr": None}, {})
    {'dict': [[0, {'tuple': [0.9, 0.99]}], ['lr', None]]}
    """
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"tensor": key}
    if isinstance(obj, dict):
        return {"dict": [[split_tensors(k, tensors), split_tensors(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [split_tensors(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [split_tensors(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint without pickle")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``split_tensors``."""
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    [(tag, value)] = obj.items()
    if tag == "tensor":
        return tensors[value]
    if tag == "tuple":
        return tuple(join_tensors(v, tensors) for v in value)
    if tag == "dict":
        return {join_tensors(k, tensors): join_tensors(v, tensors) for k, v in value}
    raise ValueError(f"unknown tag {tag!r}")


# ----------------------------------------------------------------------------- durable, verified folders
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file, as read back from the disk, and flush them all."""
    files = {}
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        fsync_file(f)
        files[f.name] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "files": files}, indent=2) + "\n", encoding="utf-8")
    fsync_file(folder / MANIFEST)
    fsync_dir(folder)


def _describe(err: OSError) -> str:
    if err.errno is None:
        return str(err)
    name = errno.errorcode.get(err.errno, str(err.errno))
    hint = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk space",
            errno.EACCES: "make the folder writable", errno.EPERM: "make the folder writable",
            errno.EROFS: "put the run on a writable disk"}.get(err.errno, "fix the cause")
    return f"{os.strerror(err.errno)} ({name}); {hint}"


def write_verified(final: Path, write: Callable[[Path], None]) -> Path:
    """Fill ``final`` through ``write(tmp)`` in a temporary folder, add the manifest, then rename it into place.

    Any failure removes the temporary folder; an ``OSError`` (full disk, permissions) becomes a
    ``UserError`` that names the folder and the cause, so the run ends failed with a message.
    """
    tmp = final.with_name(TMP_PREFIX + final.name)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        _write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write the checkpoint {final}: {_describe(err)}; nothing half-written was kept. "
                        "`tuneforge train RECIPE --resume` continues from the last checkpoint") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verify(folder: Path, required: tuple[str, ...] = STEP_FILES) -> str | None:
    """Why ``folder`` cannot be trusted, or None when every file matches its manifest."""
    if (folder / "optimizer.pt").exists():
        return "it was written by an older tuneforge (optimizer.pt is a pickle, which tuneforge never loads)"
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return f"it has no {MANIFEST} (its write did not finish)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its {MANIFEST} is unreadable ({type(err).__name__})"
    if not isinstance(listed, dict):
        return f"its {MANIFEST} is unreadable (no file list)"
    for name in required:
        if name not in listed:
            return f"its {MANIFEST} does not list {name}"
    for name, want in listed.items():
        if Path(name).name != name:
            return f"its {MANIFEST} names a file outside the checkpoint ({name!r})"
        path = folder / name
        if not isinstance(want, dict) or not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size} bytes where {want.get('bytes')} were written (truncated or overwritten)"
        if _sha256(path) != want.get("sha256"):
            return f"{name} does not match the sha256 recorded when it was written (corrupt)"
    return None


# ----------------------------------------------------------------------------- step checkpoints
def step_dirs(run: RunDir) -> list[Path]:
    """Every ``step-NNNNNN`` folder, oldest first, whether or not it verifies."""
    if not run.checkpoints.is_dir():
        return []
    return sorted(p for p in run.checkpoints.glob("step-*") if p.is_dir())


def _step_of(folder: Path) -> int:
    return int(folder.name.removeprefix("step-"))


def save_checkpoint(run: RunDir, state: dict[str, Any], *, model: nn.Module, method: Method[Any],
                    optimizer: torch.optim.Optimizer, scheduler: Any) -> Path:
    """Write ``checkpoints/step-NNNNNN`` for ``state`` (a TrainState as a dict), verified and durable."""
    remove_partial_writes(run)  # what a killed write left behind

    def write(tmp: Path) -> None:
        save_file(method.trainable_state(model), str(tmp / TRAINABLE))
        tensors: dict[str, torch.Tensor] = {}
        rest = split_tensors({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tensors)
        save_file(tensors, str(tmp / OPTIMIZER_TENSORS))
        (tmp / OPTIMIZER_JSON).write_text(json.dumps(rest) + "\n", encoding="utf-8")
        (tmp / STATE).write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")

    return write_verified(run.checkpoints / f"step-{state['step']:06d}", write)


def save_best(run: RunDir, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``checkpoints/best`` (the best validation's trainable tensors) the same verified way."""
    return write_verified(run.checkpoints / "best", lambda tmp: save_file(tensors, str(tmp / TRAINABLE)))


def load_best(run: RunDir) -> dict[str, torch.Tensor]:
    """The best weights, refused with a message when they no longer match their manifest."""
    folder = run.checkpoints / "best"
    reason = verify(folder, required=(TRAINABLE,)) if (folder / MANIFEST).exists() else None
    if reason is not None:
        raise UserError(f"the best weights in {folder} cannot be used: {reason}; "
                        "train again with --overwrite, or keep the last weights by turning validation off")
    return load_file(str(folder / TRAINABLE))


def resume_point(run: RunDir, echo: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that verifies; each newer one is named with the reason it was skipped.

    None when the run wrote no checkpoint yet (it starts from step 0); a ``UserError`` when it
    wrote some and none verifies, since starting over silently would throw their steps away.
    """
    dirs = step_dirs(run)
    skipped = []
    for folder in reversed(dirs):
        reason = verify(folder)
        if reason is None:
            return folder
        echo(f"skipping checkpoint {folder.name}: {reason}")
        skipped.append(f"{folder.name}: {reason}")
    if dirs:
        raise UserError(f"cannot resume {run.root}: none of its {len(dirs)} checkpoint(s) verifies "
                        f"({'; '.join(skipped)}); start again with --overwrite")
    return None


def load_checkpoint(folder: Path, *, model: nn.Module, method: Method[Any],
                    optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Load a checkpoint that ``verify`` passed into the model, optimizer and scheduler; return its state."""
    method.load_trainable(model, load_file(str(folder / TRAINABLE)))
    tensors = load_file(str(folder / OPTIMIZER_TENSORS))
    extra = join_tensors(json.loads((folder / OPTIMIZER_JSON).read_text(encoding="utf-8")), tensors)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    state: dict[str, Any] = json.loads((folder / STATE).read_text(encoding="utf-8"))
    return state


def remove_partial_writes(run: RunDir) -> None:
    """Delete ``.tmp-*`` folders: a killed checkpoint write left them, and none is ever read."""
    if run.checkpoints.is_dir():
        for tmp in run.checkpoints.glob(TMP_PREFIX + "*"):
            shutil.rmtree(tmp, ignore_errors=True)


def prune_checkpoints(run: RunDir, keep: int, step: int) -> None:
    """Keep the ``keep`` newest checkpoints up to ``step``.

    A checkpoint past ``step`` can only be one that a resume skipped (it did not verify), so it goes.
    """
    dirs = step_dirs(run)
    for old in [d for d in dirs if _step_of(d) > step] + [d for d in dirs if _step_of(d) <= step][:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def trim_metrics(run: RunDir, step: int) -> None:
    """Drop from metrics.jsonl every record past ``step``, the step a resume continues from.

    Why: the steps after the checkpoint are trained again and logged again; without this the log
    and the loss curve hold them twice. A line cut short by a kill is dropped too. The file is
    rewritten atomically, so a kill here leaves the old log, never half of one.
    """
    if not run.metrics.is_file():
        return
    lines = run.metrics.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = [line for line in lines if _logged_by(line, step)]
    if kept != lines:
        write_text_atomic(run.metrics, "".join(line + "\n" for line in kept))


def _logged_by(line: str, step: int) -> bool:
    """Whether a metrics line is a whole record of a step up to ``step``."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict):
        return False
    logged = record.get("step")
    return not isinstance(logged, (int, float)) or logged <= step
