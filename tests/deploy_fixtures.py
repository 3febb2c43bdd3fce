"""Tiny finished runs shared by the deploy tests (compress, export formats, model card, run registry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import base_recipe, product_rows, sentiment_rows, write_jsonl
from tuneforge import api


def quiet(*_: object) -> None:
    return None


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """A finished full fine-tune of the tiny encoder on toy sentiment (classification head)."""
    tmp = tmp_path_factory.mktemp("cls")
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(60))
    return api.train(base_recipe(tiny_encoder, "classification", train, tmp / "run", epochs=4, lr=3e-3),
                     echo=quiet).run_dir


@pytest.fixture(scope="module")
def ext_run(tmp_path_factory: pytest.TempPathFactory, tiny_decoder: Path) -> Path:
    """A finished LoRA run of the tiny llama decoder on toy extraction."""
    tmp = tmp_path_factory.mktemp("ext")
    train = write_jsonl(tmp / "train.jsonl", product_rows(30))
    recipe = base_recipe(tiny_decoder, "extraction", train, tmp / "run", max_steps=6, lr=5e-3)
    recipe["method"] = {"name": "lora", "r": 4, "alpha": 8}
    recipe["eval"]["max_new_tokens"] = 8
    return api.train(recipe, echo=quiet).run_dir
