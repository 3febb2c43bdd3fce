"""Generated recipes, data rows and ``--set`` overrides thrown at the parsers (hypothesis, derandomised).

The promise under test: any input ends as a result or as a ``UserError`` (exit 2 with a message),
never another exception. Examples are few and each is cheap (no model is loaded), so the file stays fast.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge.cli import main
from tuneforge.data.readers import Record, read_records
from tuneforge.errors import ConfigError, DataError
from tuneforge.recipe import Recipe, load_recipe, recipe_from_dict, recipe_to_yaml

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: every code point, lone surrogates included
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=30)
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats(allow_nan=True, allow_infinity=True) | ANY_TEXT)
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8)
KEYS = ["task", "model", "method", "method.name", "method.r", "data", "data.train", "data.labels", "data.split.test",
        "train", "train.epochs", "train.max_steps", "train.lr", "train.batch_size", "train.max_length", "prompt",
        "prompt.instruction", "eval.golden", "stages", "tasks", "output", "nonsense", "train.early_stopping"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("fuzz")
    data = write_jsonl(folder / "train.jsonl", sentiment_rows(10))
    return base_recipe(folder / "model", "classification", data, folder / "run")


def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with ``value`` at the key path ``dotted`` (sections made where missing)."""
    out = copy.deepcopy(raw)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    return out


NUMBERS = ["train.epochs", "train.lr", "train.weight_decay", "train.max_steps", "train.batch_size", "train.seed",
           "method.alpha", "eval.batch_size", "data.split.test"]
CHANGES = (st.tuples(st.sampled_from(KEYS), JSONISH)
           | st.tuples(st.sampled_from(NUMBERS), st.floats() | st.integers(min_value=-(2**80), max_value=2**80)))


@settings(FUZZ, max_examples=200)  # no model, no file: cheap, so more examples
@given(changes=st.lists(CHANGES, max_size=3))
@example(changes=[("train.epochs", float("inf"))]).via("the finding of issue 18")
@example(changes=[("prompt.instruction", "a \ud800 b")]).via("a lone surrogate")
def test_recipe_dicts_validate_or_fail_with_a_config_error(valid: dict[str, Any],
                                                           changes: list[tuple[str, Any]]) -> None:
    raw = valid
    for key, value in changes:
        raw = _set(raw, key, value)
    try:
        recipe = recipe_from_dict(raw, source="fuzz.yaml")
    except ConfigError as err:
        assert str(err).startswith("fuzz.yaml")
    else:  # what is accepted can be written into the run folder: finite numbers, valid Unicode
        json.dumps(recipe.model_dump(), allow_nan=False, default=str)
        recipe_to_yaml(recipe).encode("utf-8")


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200)
       | st.builds(lambda d: yaml.safe_dump(d, allow_unicode=True), st.dictionaries(st.sampled_from(KEYS), JSONISH)))
def test_recipe_texts_through_the_cli_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            text: str | bytes) -> None:
    path = tmp_path / "recipe.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert main(["train", str(path), "--dry-run"]) == 2  # no text here names a model and data that exist
    err = capsys.readouterr().err
    assert err.startswith("tuneforge: error: ") and "Traceback" not in err, err


@FUZZ
@given(overrides=st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | ANY_TEXT, ANY_TEXT)
                          | ANY_TEXT, max_size=3))
def test_override_strings_merge_or_fail_with_a_config_error(tmp_path: Path, valid: dict[str, Any],
                                                            overrides: list[str]) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(valid), encoding="utf-8")
    try:
        assert isinstance(load_recipe(path, overrides), Recipe)
    except ConfigError as err:
        assert str(err)


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)  # lone surrogates become \ud800 escapes, as other tools write them


LINES = (st.builds(_line, st.dictionaries(ANY_TEXT | st.sampled_from(["text", "label"]), JSONISH, max_size=4))
         | st.builds(_line, JSONISH)
         | st.builds(lambda n: "[" * n + "]" * n, st.integers(0, 5000))
         | st.builds(lambda t, label: _line({"text": t, "label": label}), ANY_TEXT, st.sampled_from(["pos", "neg"]))
         | ANY_TEXT)


@FUZZ
@given(lines=st.lists(LINES, min_size=1, max_size=6), ext=st.sampled_from(["jsonl", "json", "csv"]))
def test_data_rows_read_or_fail_with_a_data_error(tmp_path: Path, lines: list[str], ext: str) -> None:
    path = tmp_path / f"rows.{ext}"
    path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogatepass"))
    try:
        records = read_records(path)
    except DataError as err:
        assert str(err)
        return
    for record in records:
        json.dumps(record.fields, ensure_ascii=False).encode("utf-8")  # every kept row is valid, shallow Unicode


@pytest.fixture(scope="module")
def encoder_task(tiny_encoder: Path) -> Any:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks.base import get_task

    recipe = recipe_from_dict(base_recipe(tiny_encoder, "classification", Path("x.jsonl"), Path("out"), max_length=16),
                              check_files=False)
    task = get_task(recipe, load_tokenizer(tiny_encoder), "encoder")
    task.schema = {"labels": ["neg", "pos"]}
    return task


@FUZZ
@given(lines=st.lists(LINES, min_size=1, max_size=4))
def test_rows_that_read_also_parse_and_tokenise(tmp_path: Path, encoder_task: Any, lines: list[str]) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogatepass"))
    try:
        records = read_records(path)
        examples = encoder_task.parse(records, "the fuzz rows")
        encoder_task.check_against_schema(examples, "the fuzz rows")
    except DataError:
        return
    for row in examples:
        assert len(encoder_task.encode(row).input_ids) <= 16


def test_a_surrogate_row_is_refused_by_name() -> None:
    """The property above relies on this: a record with a lone surrogate never reaches the tokenizer."""
    from tuneforge.data.readers import _unusable

    assert _unusable('{"text": "\\ud800"}', {"text": "\ud800"}) is not None
    assert _unusable('{"text": "ok"}', {"text": "ok"}) is None
    assert Record("a", 1, {}).where() == "a:1"
