"""Edge cases found by trying tuneforge as a new user would (each once crashed or misbehaved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import base_recipe, chat_rows, product_rows, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.errors import ConfigError, DataError
from tuneforge.recipe import load_recipe
from tuneforge.run.folder import RunDir

QUIET = {"echo": lambda *_: None}


def test_eval_reads_texts_with_unicode_line_separators(tmp_path: Path, tiny_encoder: Path) -> None:
    rows = sentiment_rows(30)
    for r in rows:
        r["text"] += " \u2028 next\u0085line"
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run", max_steps=2), **QUIET)
    assert api.evaluate(tmp_path / "run", **QUIET)["n_test"] == 6


def test_declared_labels_are_enforced_on_train_too(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20) + [{"text": "so so", "label": "neu"}])
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run")
    recipe["data"]["labels"] = ["neg", "pos"]
    recipe["data"]["split"] = {"validation": 0.0, "test": 0.0}
    with pytest.raises(DataError, match=r"train.jsonl:21: unknown label 'neu'"):
        api.train(recipe, **QUIET)


def test_a_recipe_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="is not a file"):
        load_recipe(tmp_path)


def test_overwrite_keeps_the_old_run_when_the_new_data_is_bad(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20))
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run", max_steps=2)
    api.train(recipe, **QUIET)
    with train.open("a") as fh:
        fh.write('{"text": "x"}\n')
    with pytest.raises(DataError, match="missing field 'label'"):
        api.train(recipe, overwrite=True, **QUIET)
    assert RunDir(tmp_path / "run").is_complete()


def test_bad_early_stopping_metric_is_refused_before_anything_runs(tmp_path: Path, tiny_decoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(20))
    recipe = base_recipe(tiny_decoder, "generation", train, tmp_path / "run")
    recipe["train"]["early_stopping"] = {"metric": "accuracy"}
    with pytest.raises(ConfigError, match="'accuracy' is not a generation metric; use one of loss, rouge_l, bleu"):
        api.train(recipe, **QUIET)
    assert not (tmp_path / "run").exists()


def test_a_finished_run_does_not_need_its_original_files(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20))
    api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run", max_steps=2), **QUIET)
    train.rename(tmp_path / "moved.jsonl")
    assert api.evaluate(tmp_path / "run", **QUIET)["n_test"] == 4
    assert api.export(tmp_path / "run").is_dir()


def test_every_bad_row_is_listed_in_one_pass(tmp_path: Path, tiny_encoder: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    lines = [json.dumps(r) for r in sentiment_rows(6)]
    lines[1] = "{not json"
    lines[3] = json.dumps({"text": "no label here"})
    lines[4] = json.dumps({"text": "", "label": "pos"})
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines) + "\n")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(base_recipe(tiny_encoder, "classification", train, tmp_path / "run")))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    for line, problem in ((2, "malformed JSON"), (4, "missing field 'label'"), (5, "empty text")):
        assert f"{train}:{line}: {problem}" in err


def test_extraction_target_null_is_a_bad_row(tmp_path: Path, tiny_decoder: Path) -> None:
    rows = product_rows(10)
    rows[2]["attributes"] = "null"
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train.jsonl:3: field 'attributes' must be a JSON object, got null"):
        api.train(base_recipe(tiny_decoder, "extraction", train, tmp_path / "run"), **QUIET)


def test_integer_labels_can_be_declared_as_numbers(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 0}\n')
    path = tmp_path / "r.yaml"
    path.write_text(f"task: classification\nmodel: x\ndata: {{train: {tmp_path / 't.jsonl'}, labels: [0, 1]}}\n")
    assert load_recipe(path).data.labels == ["0", "1"]


def test_generation_format_is_decided_once_from_train(tmp_path: Path, tiny_decoder: Path) -> None:
    rows = chat_rows(12)
    rows[0] = {"prompt": "hi", "completion": "hello"}  # a stray row in another layout
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(1) + rows)
    recipe = base_recipe(tiny_decoder, "generation", train, tmp_path / "run")
    recipe["data"]["split"] = {"validation": 0.0, "test": 0.0}
    with pytest.raises(DataError, match=r"train.jsonl:2: field 'messages' must be a non-empty list"):
        api.train(recipe, **QUIET)


def test_predict_reports_bad_input_rows(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20))
    api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run", max_steps=2), **QUIET)
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine"}, {"body": "wrong field"}])
    with pytest.raises(DataError, match=r"nothing was predicted[\s\S]*in.jsonl:2: missing field 'text'"):
        api.predict(tmp_path / "run", inputs)
    assert not (tmp_path / "in.predictions.jsonl").exists()
