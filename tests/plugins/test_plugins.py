"""An installed plug-in works end to end: a new task and a new method, one file and one registration each.

The plug-in package (``tests/plugins/tuneforge_demo_plugin``) is installed the way pip would leave it: a
``.dist-info`` folder on ``sys.path`` whose ``entry_points.txt`` names its modules under ``tuneforge.plugins``.
No file of tuneforge names the plug-in; the recipe accepts ``task: my_task`` and ``method: {name: my_method}``
because its unions are built from the registries once the plug-ins load.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import write_jsonl
from tuneforge import api
from tuneforge.errors import ConfigError
from tuneforge.methods import METHODS
from tuneforge.recipe import recipe_from_dict, use_registries
from tuneforge.registry import reload_plugins
from tuneforge.tasks import TASKS

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src" / "tuneforge"
QUIET = {"echo": lambda *_: None}


@pytest.fixture
def plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    site = tmp_path / "site"
    info = site / "tuneforge_demo_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tuneforge-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tuneforge.plugins]\nmy_task = tuneforge_demo_plugin.my_task\n"
                                           "my_method = tuneforge_demo_plugin.my_method\n")
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.syspath_prepend(str(site))
    reload_plugins()  # this process loaded its plug-ins before the package was "installed"
    yield
    TASKS.unregister("my_task")
    METHODS.unregister("my_method")
    for name in [m for m in sys.modules if m.startswith("tuneforge_demo_plugin")]:
        del sys.modules[name]
    use_registries()  # the recipe forgets the plug-in again


def qa_rows(n: int) -> list[dict[str, str]]:
    colours = ["red", "blue", "green", "black"]
    return [{"question": f"which colour is mug {i}?", "answer": colours[i % 4]} for i in range(n)]


def test_a_plugin_task_and_method_train_end_to_end(plugin_installed: None, tmp_path: Path, tiny_decoder: Path) -> None:
    train = write_jsonl(tmp_path / "qa.jsonl", qa_rows(30))
    recipe = {"task": "my_task", "model": str(tiny_decoder), "method": {"name": "my_method", "patterns": ["norm"]},
              "data": {"train": str(train), "split": {"validation": 0.2, "test": 0.2}},
              "train": {"max_steps": 3, "lr": 1e-2, "batch_size": 4, "max_length": 48},
              "eval": {"max_new_tokens": 6, "batch_size": 8, "metrics": ["chrf"]}, "output": str(tmp_path / "run")}
    result = api.train(recipe, **QUIET)
    report = result.report
    assert report is not None and report["task"] == "my_task" and report["method"] == "my_method"
    assert {"token_f1", "exact_match", "chrf"} <= set(report["tuned"]) and "chrf" in report["intervals"]
    saved = load_file(str(result.run_dir / "model" / "trainable.safetensors"))
    base = dict(AutoModelForCausalLM.from_pretrained(tiny_decoder).named_parameters())
    assert saved and all("norm" in name for name in saved)  # only what the method chose trained and was saved
    assert any(not saved[n].equal(base[n].detach()) for n in saved)  # ... and it did train


def test_no_tuneforge_file_names_the_plugin() -> None:
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "my_task" not in text and "my_method" not in text, path


def test_plugin_settings_are_validated_like_builtin_ones(plugin_installed: None) -> None:
    raw = {"task": "my_task", "model": "m", "data": {"train": "t.jsonl"}, "method": {"name": "my_method", "patern": []}}
    with pytest.raises(ConfigError, match=r"method\.my_method\.patern: unknown key"):
        recipe_from_dict(raw, check_files=False)


def test_a_plugin_task_has_a_validated_section_of_its_own(plugin_installed: None, tiny_decoder: Path) -> None:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks.base import Example, get_task

    raw = {"task": "my_task", "model": str(tiny_decoder), "data": {"train": "t.jsonl"}}
    with pytest.raises(ConfigError, match=r"my_task\.normalize: unknown key"):
        recipe_from_dict({**raw, "my_task": {"normalize": False}}, check_files=False)
    with pytest.raises(ConfigError, match="the my_task section applies to task my_task, not generation"):
        recipe_from_dict({**raw, "task": "generation", "my_task": {}}, check_files=False)
    examples, said = [Example(where="t:0", text="q", target="Red")], [{"prediction": "red"}]
    for normalise, exact in ((True, 1.0), (False, 0.0)):
        recipe = recipe_from_dict({**raw, "my_task": {"normalise": normalise}}, check_files=False)
        task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
        assert task.score(examples, said)["exact_match"] == exact  # the task reads its own section


def test_without_the_plugin_its_names_are_unknown() -> None:
    raw = {"task": "my_task", "model": "m", "data": {"train": "t.jsonl"}, "method": {"name": "my_method"}}
    with pytest.raises(ConfigError) as err:
        recipe_from_dict(raw, check_files=False)
    assert "task: Input should be 'classification'" in str(err.value)
    assert "does not match any of the expected tags: 'discriminative'" in str(err.value)
    with pytest.raises(ConfigError, match="my_task: unknown key"):  # nor is its section
        recipe_from_dict({"task": "generation", "model": "m", "data": {"train": "t.jsonl"}, "my_task": {}},
                         check_files=False)
