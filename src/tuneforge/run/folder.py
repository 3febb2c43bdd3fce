"""The run folder: everything a run produced, laid out so anyone can audit it.

Layout::

    recipe.yaml        the resolved recipe (every default spelled out)
    status.json        running | failed | complete, with the reason of a failure
    environment.json   versions of python, torch, transformers, peft; device
    data/              the exact splits used (train/validation/test.jsonl), fingerprints.json, schema.json
    metrics.jsonl      one JSON object per logged step and per evaluation
    checkpoints/       step-NNNNNN/ (trainable.safetensors, optimizer.safetensors + .json, state.json,
                       manifest.json with each file's sha256, written last), the best one kept
    model/             trainable.safetensors + tokenizer (+ adapter/ for peft methods)
    predictions/       base.jsonl and tuned.jsonl on the test split
    report.json, report.md

Every file is written to a temporary name and renamed, and ``report.json`` is written last, so
a run that died never looks finished: ``is_complete`` checks ``status.json`` and the report.
The atomic writes ``fsync`` the file before the rename and the folder after it, so a power loss
leaves the old file or the new one, never a renamed but empty one.

Ownership: tuneforge deletes, replaces or resumes into a folder only when it recognises the folder as
its own (``owned_kind``: the ``.tuneforge-run`` marker written when the folder was created, or the
files a run, export, compressed model or sweep always holds). ``claim_output`` makes that decision
before anything is written and ``remove_owned`` is the only way a user-named folder is deleted. The
filesystem root, the home folder and the current folder (with its ancestors) are refused whatever
the flags: a run always gets a folder of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file

from tuneforge.errors import UserError
from tuneforge.files import save_tensors_atomic, write_json_atomic


# ----------------------------------------------------------------------------- ownership of folders
MARKER = ".tuneforge-run"
Kind = Literal["run", "compressed", "export", "sweep"]
Claim = Literal["new", "exists", "resume", "replace"]
_WHAT = {"run": "a tuneforge run", "compressed": "a tuneforge compressed model", "export": "a tuneforge export",
         "sweep": "a tuneforge sweep"}


def mark_owned(folder: Path, kind: Kind) -> None:
    """Write the marker that lets a later ``--overwrite`` or ``--resume`` recognise ``folder`` as ours.

    A marker already there is kept, so it records when the folder was first created.
    """
    marker = _json_object(folder / MARKER)
    if marker is not None and marker.get("kind") == kind:
        return
    write_json_atomic(folder / MARKER, {"created_by": "tuneforge", "kind": kind,
                                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _json_object(path: Path) -> dict[str, Any] | None:
    if not path.is_file() or path.is_symlink():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def owned_kind(folder: Path | str) -> Kind | None:
    """What tuneforge folder this is, or None when tuneforge did not write it.

    The marker decides; folders written before the marker existed are recognised by the files that
    kind always holds (a run: ``status.json`` with a state and ``recipe.yaml``; an export:
    ``tuneforge.json`` naming its task and base model; a sweep: ``study.db`` or ``sweep.json``).
    """
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return None
    marker = _json_object(folder / MARKER)
    if marker is not None and marker.get("created_by") == "tuneforge" and marker.get("kind") in _WHAT:
        return marker["kind"]
    status = _json_object(folder / "status.json")
    if status is not None and "state" in status and (folder / "recipe.yaml").is_file():
        return "compressed" if (folder / "compression.json").is_file() else "run"
    export = _json_object(folder / "tuneforge.json")
    if export is not None and {"task", "base_model"} <= export.keys():
        return "export"
    if (folder / "sweep.json").is_file() or (folder / "study.db").is_file():
        return "sweep"
    return None


def is_tuneforge_run(folder: Path | str) -> bool:
    return owned_kind(folder) == "run"


def _protected(resolved: Path) -> str | None:
    """Why ``resolved`` may never be a tuneforge output folder, or None when it may."""
    if resolved == Path(resolved.anchor):
        return "it is the root of the filesystem"
    try:
        home: Path | None = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no password entry: there is no home folder to protect
        home = None
    if home is not None and resolved == home:
        return "it is your home folder"
    if home is not None and resolved in home.parents:
        return "it holds your home folder"
    cwd = Path.cwd().resolve()
    if resolved == cwd:
        return "it is the current folder"
    if resolved in cwd.parents:
        return "it holds the current folder"
    return None


def _refuse_protected(path: Path) -> None:
    why = _protected(path.resolve())
    if why is not None:
        raise UserError(f"refusing to use {str(path)!r} as an output folder: {why}, and tuneforge never writes "
                        "into or deletes such a folder; give each run a folder of its own, such as runs/NAME")


def _refuse_non_folder(path: Path) -> None:
    """A file at the path (or at a folder above it) would make every later write fail with a traceback."""
    if path.is_symlink() and not path.is_dir():
        raise UserError(f"output {path} is a symbolic link to nothing usable; name a folder (it is created)")
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under {p}, which is a file"
                raise UserError(f"output {path} {where}, not a folder; name a folder (it is created)")
            return


def _has_entries(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def claim_output(path: Path | str, *, kind: Kind, overwrite: bool = False, resume: bool = False) -> Claim:
    """Decide, before anything is written, what may be done with the output folder ``path``.

    ``new``: absent or empty, write into it. ``exists``: a folder of this kind and neither flag; the
    caller says what to do. ``resume``/``replace``: a folder of this kind that ``--resume`` continues or
    ``--overwrite`` replaces. Anything else raises a ``UserError`` that says why, whatever the flags:
    the root, home and current folders, a path that is a file, and a non-empty folder tuneforge did not
    write.
    """
    path = Path(path)
    _refuse_protected(path)
    _refuse_non_folder(path)
    if not _has_entries(path):
        return "new"
    owner = owned_kind(path)
    if owner != kind:
        raise UserError(_not_ours(path, kind, owner, overwrite=overwrite, resume=resume))
    if overwrite:
        return "replace"
    return "resume" if resume else "exists"


def _not_ours(path: Path, kind: Kind, owner: Kind | None, *, overwrite: bool, resume: bool) -> str:
    what = (f"holds {_WHAT[owner]}, not {_WHAT[kind]}" if owner is not None else
            f"holds files that tuneforge did not write (no {MARKER} marker, nor the files {_WHAT[kind]} holds)")
    refused = ("so --overwrite will not delete it" if overwrite else
               "so there is nothing to resume" if resume else "so tuneforge will not write into it")
    return (f"{path} {what}, {refused}; pick a new or empty folder for the output, "
            "or move or delete that folder yourself if you meant it")


def remove_owned(path: Path | str, kind: Kind) -> None:
    """Delete ``path`` only if it is empty or a tuneforge folder of ``kind``: the one guarded ``rmtree``."""
    path = Path(path)
    _refuse_protected(path)
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; tuneforge does not delete through links: remove the link "
                        "yourself or pick another output folder")
    if not path.exists():
        return
    _refuse_non_folder(path)
    if not _has_entries(path):
        path.rmdir()
        return
    owner = owned_kind(path)
    if owner != kind:
        raise UserError(_not_ours(path, kind, owner, overwrite=True, resume=False))
    shutil.rmtree(path)


class RunDir:
    """Paths and small read/write helpers for one run folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    recipe = property(lambda self: self.root / "recipe.yaml")
    status_file = property(lambda self: self.root / "status.json")
    environment = property(lambda self: self.root / "environment.json")
    data = property(lambda self: self.root / "data")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    model = property(lambda self: self.root / "model")
    predictions = property(lambda self: self.root / "predictions")
    report_json = property(lambda self: self.root / "report.json")
    report_md = property(lambda self: self.root / "report.md")

    def exists(self) -> bool:
        return self.root.exists() and any(self.root.iterdir())

    def status(self) -> dict[str, Any]:
        if not self.status_file.is_file():
            return {}
        return json.loads(self.status_file.read_text(encoding="utf-8"))

    def set_status(self, state: str, **extra: Any) -> None:
        write_json_atomic(self.status_file, {"state": state, **extra})

    def is_complete(self) -> bool:
        return self.status().get("state") == "complete" and self.report_json.is_file()

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl (a line is small enough to be written whole).

        The log is opened without following links: a ``metrics.jsonl`` planted as a symbolic link would
        otherwise have the run append to whatever file it points at.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if self.metrics.is_symlink():
            raise _link_refused(self.metrics)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.metrics, flags, 0o644)
        except OSError as err:
            if self.metrics.is_symlink():  # made a link between the check and the open
                raise _link_refused(self.metrics) from None
            raise err
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
            fh.flush()

    def save_trainable(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        save_tensors_atomic(folder / "trainable.safetensors", state)

    @staticmethod
    def load_trainable(folder: Path) -> dict[str, torch.Tensor]:
        return load_file(str(folder / "trainable.safetensors"))


def _link_refused(path: Path) -> UserError:
    return UserError(f"{path} is a symbolic link; tuneforge writes a run's log only to a file of its own "
                     "and does not follow links there: remove the link, then --resume or start again")
