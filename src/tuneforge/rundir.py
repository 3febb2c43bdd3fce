"""The run folder: everything a run produced, laid out so anyone can audit it.

Layout::

    recipe.yaml        the resolved recipe (every default spelled out)
    status.json        running | failed | complete, with the reason of a failure
    environment.json   versions of python, torch, transformers, peft; device
    data/              the exact splits used (train/validation/test.jsonl), fingerprints.json, schema.json
    metrics.jsonl      one JSON object per logged step and per evaluation
    checkpoints/       step-NNNNNN/ (trainable.safetensors, optimizer.pt, state.json), the best one kept
    model/             trainable.safetensors + tokenizer (+ adapter/ for peft methods)
    predictions/       base.jsonl and tuned.jsonl on the test split
    report.json, report.md

Every file is written to a temporary name and renamed, and ``report.json`` is written last, so
a run that died never looks finished: ``is_complete`` checks ``status.json`` and the report.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


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
        """Append one line to metrics.jsonl (a line is small enough to be written whole)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.metrics.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
            fh.flush()

    def save_trainable(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        save_tensors_atomic(folder / "trainable.safetensors", state)

    @staticmethod
    def load_trainable(folder: Path) -> dict[str, torch.Tensor]:
        return load_file(str(folder / "trainable.safetensors"))
