"""Each bad input found by probing the CLI, replayed: a message naming what is wrong and exit 2, never a traceback."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge.cli import main


def _recipe(tmp_path: Path, model: Path, **changes: object) -> Path:
    data = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20))
    cfg = base_recipe(model, "classification", data, tmp_path / "run", epochs=1)
    cfg.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    message = err[err.index("tuneforge: error: "):]  # other libraries' log lines may come before it
    assert "Traceback" not in message and "internal error" not in err, err
    for text in expected:
        assert text in message, err
    return message


def test_a_recipe_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"task: classification\nmodel: caf\xe9\n")
    _fails(["train", str(path)], capsys, f"{path}:2: not valid UTF-8")


def test_bad_yaml_in_set(tmp_path: Path, tiny_encoder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", str(_recipe(tmp_path, tiny_encoder)), "--set", "train.lr=[1,"], capsys,
           "override 'train.lr=[1,': not valid YAML")


def test_set_below_a_value_set_before(tmp_path: Path, tiny_encoder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", str(_recipe(tmp_path, tiny_encoder)), "--set", "train=1", "--set", "train.lr=2"], capsys,
           "override 'train.lr=2'")


@pytest.mark.parametrize("value, expected", [(".inf", "train.epochs: inf is not a usable number"),
                                             (".nan", "train.epochs: nan is not a usable number"),
                                             ("1.0e+400", "train.epochs: inf"),
                                             ('"inf"', "train.epochs: Input should be a finite number"),
                                             ("1.0e30", "train.epochs: Input should be less than or equal to")])
def test_epochs_that_are_not_finite_or_huge(tmp_path: Path, tiny_encoder: Path, capsys: pytest.CaptureFixture[str],
                                            value: str, expected: str) -> None:
    _fails(["train", str(_recipe(tmp_path, tiny_encoder)), "--set", f"train.epochs={value}"], capsys, expected)


def test_an_integer_beyond_64_bits(tmp_path: Path, tiny_encoder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", str(_recipe(tmp_path, tiny_encoder)), "--set", f"train.seed={10**30}"], capsys,
           "train.seed: 1000000000000000000000000000000 is too large")


def test_duplicate_keys_name_the_key_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("task: classification\nmodel: minilm-l6\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.001\n")
    _fails(["train", str(path)], capsys, f"{path}:6:", "duplicate key 'lr' (first given on line 4)")


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    from tuneforge.recipe import load_yaml

    assert load_yaml("base: &b {lr: 1}\ntrain:\n  <<: *b\n  lr: 2\n", "r.yaml")["train"] == {"lr": 2}


def test_a_row_of_deeply_nested_brackets(tmp_path: Path, tiny_encoder: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "nested.jsonl"
    data.write_text(json.dumps(sentiment_rows(1)[0]) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    recipe = _recipe(tmp_path, tiny_encoder, data={"train": str(data)})
    _fails(["train", str(recipe)], capsys, f"{data}:2: JSON nested more than 64 levels deep")


def test_a_lone_surrogate_in_the_data(tmp_path: Path, tiny_encoder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "surrogate.jsonl"
    rows = "".join(json.dumps(r) + "\n" for r in sentiment_rows(20))
    data.write_text(rows + '{"text": "broken \\ud800 escape", "label": "pos"}\n')
    recipe = _recipe(tmp_path, tiny_encoder, data={"train": str(data)})
    _fails(["train", str(recipe)], capsys, f"{data}:21: field 'text' holds a lone surrogate")


def test_a_lone_surrogate_in_the_recipe(tmp_path: Path, tiny_decoder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, tiny_decoder)
    _fails(["train", str(recipe), "--set", 'prompt.instruction="a \\ud800 b"'], capsys,
           "prompt.instruction: the text holds a lone surrogate")


def test_an_instruction_with_braces(tmp_path: Path, tiny_decoder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tuneforge.recipe import load_recipe
    from tuneforge.tasks.base import get_task
    from tuneforge.models.loading import load_tokenizer

    instruction = 'Answer with one of {labels}, as JSON like {"label": "x"} or {other}.'
    recipe = _recipe(tmp_path, tiny_decoder, prompt={"instruction": instruction, "system": "a {b} c"})
    assert main(["train", str(recipe), "--dry-run"]) == 0
    task = get_task(load_recipe(recipe), load_tokenizer(tiny_decoder), "decoder")
    task.schema = {"labels": ["neg", "pos"]}
    user = task._messages("hi")[-1]["content"]
    assert user.startswith('Answer with one of neg, pos, as JSON like {"label": "x"} or {other}.')


def test_predict_output_that_is_a_folder(finished_run: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", sentiment_rows(2))
    _fails(["predict", str(finished_run), str(data), "-o", str(tmp_path)], capsys, f"the output {tmp_path} is a folder")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    assert main(["train", str(_recipe(folder, tiny_encoder))]) == 0
    return folder / "run"


def _damage(run: Path, where: Path, name: str, how: str) -> Path:
    copy = where / "run"
    shutil.copytree(run, copy)
    path = copy / name
    if how == "delete":
        path.unlink()
    elif how == "garble":
        path.write_text("{: [", encoding="utf-8")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return copy


@pytest.mark.parametrize("name, how", [("data/test.jsonl", "delete"), ("data/schema.json", "garble"),
                                       ("data/schema.json", "delete"), ("recipe.yaml", "garble"),
                                       ("model/trainable.safetensors", "truncate")])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_damaged_run_folder(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              name: str, how: str, command: str) -> None:
    if command == "predict" and name == "data/test.jsonl":
        pytest.skip("predict reads no split")
    run = _damage(finished_run, tmp_path, name, how)
    argv = ["eval", str(run)] if command == "eval" else \
        ["predict", str(run), str(write_jsonl(tmp_path / "in.jsonl", sentiment_rows(2))), "-o",
         str(tmp_path / "p.jsonl")]
    _fails(argv, capsys, f"the run folder {run} is damaged", str(run / name))


def test_a_huge_row_is_cut_before_tokenising(tmp_path: Path, tiny_decoder: Path, caplog: pytest.LogCaptureFixture,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rows = sentiment_rows(20)
    rows[0]["text"] = "word " * 400_000  # 2 MB on one line; max_length 64 bounds it to 2,048 characters
    data = write_jsonl(tmp_path / "huge.jsonl", rows)
    recipe = _recipe(tmp_path, tiny_decoder, data={"train": str(data), "split": {"validation": 0.0, "test": 0.0}})
    with caplog.at_level(logging.WARNING, logger="tuneforge"):
        assert main(["train", str(recipe), "--dry-run"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "were cut" in r.getMessage()]
    assert len(warnings) == 1 and "1 text(s) in the train data are longer than 2,048 characters" in warnings[0]
    assert "truncated rows    20" in capsys.readouterr().out  # the cut row counts as truncated, as before


def test_cutting_keeps_the_tokens_the_model_sees(tiny_encoder: Path, tiny_decoder: Path) -> None:
    from tuneforge.data.readers import Record
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.tasks.base import get_task

    text = " ".join(f"w{i % 97}" for i in range(20_000))
    for model, kind in ((tiny_encoder, "encoder"), (tiny_decoder, "decoder")):
        cfg = base_recipe(model, "classification", Path("unused.jsonl"), Path("unused"), max_length=16)
        task = get_task(recipe_from_dict(cfg, check_files=False), load_tokenizer(model), kind)
        task.schema = {"labels": ["neg", "pos"]}
        (example,) = task.parse([Record("t.jsonl", 1, {"text": text, "label": "pos"})], "rows")
        assert len(example.text) == 16 * 32
        whole = example.__class__(where=example.where, text=text, target=example.target)
        assert task.encode(example).input_ids == task.encode(whole).input_ids


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import tuneforge.recipe

    def boom() -> dict:
        raise ZeroDivisionError("bug\nsecond line")

    monkeypatch.setattr(tuneforge.recipe, "json_schema", boom)
    assert main(["schema"]) == 1
    err = capsys.readouterr().err
    assert err == ("tuneforge: internal error: ZeroDivisionError: bug second line "
                   "(rerun with --debug for the traceback)\n")
    assert main(["schema", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("error, expected", [
    (PermissionError(13, "Permission denied", "/data/out.jsonl"),
     "Permission denied: /data/out.jsonl; check the permissions"),
    (OSError(28, "No space left on device", "/runs/x"), "No space left on device: /runs/x; free some disk space"),
    (IsADirectoryError(21, "Is a directory", "/tmp/a", None, "/tmp/b"), "Is a directory: /tmp/a -> /tmp/b"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "not valid Unicode"),
])
def test_system_errors_are_messages_with_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                error: BaseException, expected: str) -> None:
    import tuneforge.recipe

    def fail() -> dict:
        raise error

    monkeypatch.setattr(tuneforge.recipe, "json_schema", fail)
    assert _fails(["schema"], capsys, expected).startswith("tuneforge: error: ")
