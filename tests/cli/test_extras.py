"""The light install: optional packages give a one-line install hint, and `--help` imports no ML stack."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuneforge.cli import describe_error
from tuneforge.extras import EXTRA_OF, MissingExtra, install_hint, is_installed, require

SRC = Path(__file__).resolve().parents[2] / "src"
HEAVY = ("torch", "transformers", "peft", "accelerate", "fastapi", "matplotlib", "optuna", "onnxruntime")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)


def test_building_the_parser_imports_no_heavy_package() -> None:
    out = _python("import sys; from tuneforge.cli import build_parser; build_parser(); "
                  f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert out.stdout.strip() == ""


def test_help_is_fast() -> None:
    """`tuneforge --help` under 0.5 s: the best of three, so a busy shared machine does not make it flaky."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tuneforge", "--help"], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        assert done.returncode == 0 and "usage: tuneforge" in done.stdout
    assert min(times) < 0.5, times


def test_require_names_the_extra_of_a_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ModuleNotFoundError
    with pytest.raises(MissingExtra, match=r"tuneforge sweep needs .*'optuna'.*pip install 'tuneforge\[sweep\]'"):
        require("optuna", "tuneforge sweep")


def test_require_returns_an_installed_module() -> None:
    assert require("json").dumps([1]) == "[1]"
    assert is_installed("json") and not is_installed("no_such_module_tuneforge")


def test_an_error_inside_an_installed_package_is_not_hidden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broken dependency of an installed package is a real error, not a missing extra."""
    (tmp_path / "tf_broken_pkg.py").write_text("import tf_missing_inner_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="tf_missing_inner_dependency"):
        require("tf_broken_pkg")


def test_cli_turns_an_escaped_module_error_into_the_install_line() -> None:
    message, code = describe_error(ModuleNotFoundError("No module named 'fastapi'", name="fastapi"))
    assert code == 2 and message.endswith("pip install 'tuneforge[serve]'")
    message, code = describe_error(ModuleNotFoundError("No module named 'nope'", name="nope"))
    assert code == 1  # not an optional extra: a bug


def test_every_extra_named_exists_in_pyproject() -> None:
    import tomllib

    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    assert set(EXTRA_OF.values()) <= set(extras)
    assert install_hint("mlflow.tracking") == "pip install 'tuneforge[tracking]'"
    core = " ".join(pyproject["project"]["dependencies"])
    for optional in ("fastapi", "onnx", "opacus", "optuna", "httpx", "torchao", "nltk", "phonenumbers"):
        assert optional not in core
