"""The CLI: --help everywhere, the model list, exit codes for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.cli import build_parser, main

COMMANDS = ["train", "eval", "predict", "export", "models", "demo", "schema"]


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(COMMANDS) <= set(sub.choices)  # type: ignore[union-attr]
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: tuneforge " + command in capsys.readouterr().out


def test_models_lists_the_embedded_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "minilm-l6" in out and "Apache-2.0" in out


def test_bad_recipe_exits_2_with_the_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "b"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: classification\nmodel: minilm-l6\n"
                      f"data: {{train: {tmp_path / 't.jsonl'}, txt_field: x}}\n")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "data.txt_field: unknown key" in err and str(recipe) in err and "Traceback" not in err


def test_missing_recipe_and_unknown_model_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "b"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: classification\nmodel: no-such-model\ndata: {{train: {tmp_path / 't.jsonl'}}}\n")
    assert main(["train", str(recipe)]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_eval_on_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a finished tuneforge run" in capsys.readouterr().err
