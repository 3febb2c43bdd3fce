"""ShareGPT and LLaMA-Factory's alpaca (system, history) read as they are, into the same chat messages."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.data.readers import read_records
from tuneforge.models.loading import load_tokenizer
from tuneforge.recipe import recipe_from_dict
from tuneforge.tasks.base import get_task


def _examples(tmp_path: Path, tiny_decoder: Path, rows: list[dict]) -> list:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = recipe_from_dict({"task": "generation", "model": str(tiny_decoder), "data": {"train": str(data)}})
    task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
    return task.parse(read_records(data), "the train data")


def test_sharegpt_conversations(tmp_path: Path, tiny_decoder: Path) -> None:
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                             {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "2+2?"},
                             {"from": "gpt", "value": "4"}]}
    [ex] = _examples(tmp_path, tiny_decoder, [row])
    assert ex.target == "4"
    assert ex.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}]


def test_alpaca_with_system_and_history(tmp_path: Path, tiny_decoder: Path) -> None:
    row = {"instruction": "And 3+3?", "input": "", "output": "6", "system": "You add numbers.",
           "history": [["What is 1+1?", "2"]]}
    [ex] = _examples(tmp_path, tiny_decoder, [row])
    assert ex.target == "6"
    assert ex.messages == [{"role": "system", "content": "You add numbers."},
                           {"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "2"},
                           {"role": "user", "content": "And 3+3?"}]


def test_a_bad_sharegpt_speaker_names_its_row(tmp_path: Path, tiny_decoder: Path) -> None:
    import pytest

    from tuneforge.errors import DataError

    with pytest.raises(DataError, match=r"d.jsonl:1: conversations\[0\] must be an object with from in"):
        _examples(tmp_path, tiny_decoder, [{"conversations": [{"from": "robot", "value": "x"}]}])
