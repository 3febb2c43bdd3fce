"""Continued pre-training on raw text: the .txt reader, packing, and held-out perplexity before/after."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import COLOURS
from tuneforge import api
from tuneforge.data.readers import read_records
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import recipe_from_dict
from tuneforge.tasks.base import get_task
from tuneforge.tasks.language_modeling import MIN_BLOCK


def domain_text(n: int) -> str:
    return "\n\n".join(f"the {COLOURS[i % 4]} mug is size {i % 3 + 1}\nit ships from acme" for i in range(n)) + "\n"


def test_txt_reader_gives_one_record_per_paragraph_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("first para\nstill first\n\n\nsecond\n\nthird\n")
    records = read_records(path)
    assert [r.fields["text"] for r in records] == ["first para\nstill first", "second", "third"]
    assert [r.line for r in records] == [1, 5, 7]


def _recipe(tiny_decoder: Path, train: Path, out: Path, **extra: object) -> dict:
    return {"task": "language_modeling", "model": str(tiny_decoder), "method": {"name": "full"},
            "data": {"train": str(train), "split": {"validation": 0.1, "test": 0.2}},
            "train": {"epochs": 3, "lr": 1e-2, "batch_size": 4, "max_length": 32, **extra},
            "eval": {"batch_size": 8}, "output": str(out)}


def test_packing_fills_blocks_and_keeps_every_token(tmp_path: Path, tiny_decoder: Path) -> None:
    train = tmp_path / "d.txt"
    train.write_text(domain_text(30))
    recipe = recipe_from_dict(_recipe(tiny_decoder, train, tmp_path / "run"))
    task = get_task(recipe, load_tokenizer(resolve_model(str(tiny_decoder)).path), "decoder")
    examples = task.parse(read_records(train), "train")
    blocks = task.encode_many(examples)
    stream = sum(len(task._ids(e.text)) + 1 for e in examples)
    assert all(len(b.input_ids) == 32 for b in blocks[:-1]) and len(blocks[-1].input_ids) <= 32
    tail = stream % 32
    dropped = tail if tail < MIN_BLOCK else 0  # only a tail too short to learn from is left out
    assert sum(len(b.input_ids) for b in blocks) == stream - dropped  # no padding, nothing else lost
    assert all(b.labels == b.input_ids for b in blocks)


def test_continued_pretraining_lowers_held_out_perplexity(tmp_path: Path, tiny_decoder: Path) -> None:
    train = tmp_path / "domain.txt"
    train.write_text(domain_text(80))
    result = api.train(_recipe(tiny_decoder, train, tmp_path / "run"), echo=lambda *_: None)
    report = result.report
    assert report is not None and report["headline"] == ["perplexity"]
    assert report["tuned"]["perplexity"] < 0.5 * report["base"]["perplexity"]
    lo, hi = report["intervals"]["perplexity"]["delta"]
    assert hi < 0  # lower is better, and the whole interval says so
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"text": "the red mug is size 2"}) + "\n")
    out = api.predict(result.run_dir, new)
    assert json.loads(out.read_text())["prediction"] > 1.0
