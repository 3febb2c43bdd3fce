"""A runs root with a tiny encoder, a data file and one finished run (trained in-process, as the CLI would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import sentiment_rows, write_jsonl


def studio_root(tmp: Path) -> tuple[Path, Path, Path]:
    """``(root, model, data)``: a tiny encoder and 40 rows of toy sentiment under the runs root."""
    from tuneforge.models.tiny import make_tiny_encoder

    root = tmp / "runs"
    root.mkdir()
    model = make_tiny_encoder(root / "models" / "tiny-enc", seed=0)
    data = write_jsonl(root / "train.jsonl", sentiment_rows(40))
    return root, model, data


def recipe(model: Path, data: Path, out: Path, **train: Any) -> dict[str, Any]:
    """Classification on the shared split (same data and split seed: the same test items for every run)."""
    return {"task": "classification", "model": str(model), "method": {"name": "full"},
            "data": {"train": str(data), "split": {"validation": 0.2, "test": 0.2}},
            "train": {"epochs": 1, "lr": 1e-2, "batch_size": 4, "seed": 0, "max_length": 32, **train},
            "eval": {"batch_size": 8}, "output": str(out)}


def finished_run(model: Path, data: Path, out: Path, **train: Any) -> Path:
    from tuneforge import api

    api.train(recipe(model, data, out, **train), echo=lambda *_: None)
    return out
