"""The preflight says where each split came from: files read, or the share carved out of train."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.recipe import recipe_from_dict
from tuneforge.run.splits import split_sources
from tuneforge.train.preflight import Preflight


def test_carved_splits_are_named_as_carved(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "a", "label": "x"}) + "\n")
    recipe = recipe_from_dict({"task": "classification", "model": "minilm-l6", "output": str(tmp_path / "r"),
                               "data": {"train": str(tmp_path / "train.jsonl"), "max_train_rows": 5,
                                        "split": {"validation": 0.1, "test": 0.2, "seed": 3}}})
    sources = split_sources(recipe)
    assert sources["train"] == f"{tmp_path / 'train.jsonl'}, first 5 rows (data.max_train_rows)"
    assert sources["validation"] == "10% carved from train (data.split.validation, seed 3, stratified)"
    assert sources["test"] == "20% carved from train (data.split.test, seed 3, stratified)"
    pre = Preflight(device="cpu", dtype="float32", mixed_precision="no", parameters={"total": 1, "trainable": 1},
                    data={"rows": 1, "validation_rows": 0, "test_rows": 0, "tokens": 1, "loss_tokens": 1, "longest": 1,
                          "max_length": 8, "truncated": 0, "zero_answer": 0}, sources=sources)
    text = "\n".join(pre.lines())
    assert "test from       20% carved from train" in text and "train from" in text


def test_given_folders_are_named_with_their_files(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / "d" / name).write_text(json.dumps({"text": "a", "label": "x"}) + "\n")
    recipe = recipe_from_dict({"task": "classification", "model": "minilm-l6", "output": str(tmp_path / "r"),
                               "data": {"train": str(tmp_path / "d"), "test": str(tmp_path / "d"),
                                        "split": {"validation": 0.0}}})
    sources = split_sources(recipe)
    assert sources["test"] == f"{tmp_path / 'd'} (folder: {tmp_path / 'd' / 'test.jsonl'})"
    assert sources["validation"] == "none (no data.validation, data.split.validation is 0)"
