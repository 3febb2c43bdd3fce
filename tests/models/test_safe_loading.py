"""Safe loading by construction: no pickle is ever opened, no model code and no recipe code runs unasked.

Every refusal test plants a real pickle whose ``__reduce__`` would create a marker file, and asserts the
marker never appears: the gate must refuse before transformers (or torch) could open the file.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import product_rows, write_jsonl

from tuneforge.errors import ConfigError, UserError
from tuneforge.models.loading import check_safe_folder, load_encoder, load_model, load_tokenizer
from tuneforge.models.resolve import ResolvedModel, resolve_model


class _Plant:
    """Unpickling this object creates ``marker``: proof that a pickle was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _plant_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"model.embed_tokens.weight": _Plant(marker)}))
    return path


def test_the_planted_pickle_would_fire(tmp_path: Path) -> None:
    """The trap works: opening the planted file creates its marker (so an absent marker means unopened)."""
    marker = tmp_path / "fired"
    pickle.loads(_plant_pickle(tmp_path / "trap.bin", marker).read_bytes())  # noqa: S301 (our own trap)
    assert marker.exists()


def _copy(model: Path, tmp_path: Path, name: str = "model") -> Path:
    folder = tmp_path / name
    shutil.copytree(model, folder)
    return folder


def _decoder(folder: Path) -> ResolvedModel:
    return ResolvedModel(name=folder.name, path=folder, kind="decoder", spec=None)


def test_pickle_only_folder_is_refused_unopened_with_a_conversion_command(tiny_decoder: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_decoder, tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    _plant_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(UserError, match="only pickled weights \\(pytorch_model.bin\\)") as err:
        load_model(resolve_model(str(folder)), head="causal_lm")
    assert "safe_serialization=True" in str(err.value) and "LlamaForCausalLM" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("ext", ["pt", "pth", "ckpt", "pkl"])
def test_every_pickle_suffix_is_refused(tiny_encoder: Path, tmp_path: Path, ext: str) -> None:
    folder = _copy(tiny_encoder, tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    _plant_pickle(folder / f"weights.{ext}", marker)
    with pytest.raises(UserError, match=f"only pickled weights \\(weights.{ext}\\)"):
        load_encoder(folder)
    assert not marker.exists()


@pytest.mark.parametrize("index_name, keep_safetensors", [
    ("model.safetensors.index.json", False),  # the finding: a safetensors index naming .bin shards
    ("pytorch_model.bin.index.json", False),
    ("pytorch_model.bin.index.json", True),  # even beside safetensors weights: an index is a path to a pickle
])
def test_index_naming_pickled_shards_is_refused(tiny_decoder: Path, tmp_path: Path, index_name: str,
                                               keep_safetensors: bool) -> None:
    folder = _copy(tiny_decoder, tmp_path)
    if not keep_safetensors:
        (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    shard = _plant_pickle(folder / "pytorch_model-00001-of-00001.bin", marker)
    (folder / index_name).write_text(json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": shard.name}}))
    with pytest.raises(UserError, match=f"{index_name} names weights that are not safetensors"):
        load_model(_decoder(folder), head="causal_lm")
    assert not marker.exists()


def test_index_with_a_path_out_of_the_folder_or_a_missing_shard_is_refused(tiny_decoder: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_decoder, tmp_path)
    (folder / "model.safetensors").rename(tmp_path / "outside.safetensors")
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"lm_head.weight": "../outside.safetensors"}}))
    with pytest.raises(UserError, match="not safetensors files in"):
        check_safe_folder(folder)
    index.write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(UserError, match="names shards missing"):
        check_safe_folder(folder)
    index.write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*model.safetensors.index.json"):
        check_safe_folder(folder)


def test_pickles_beside_safetensors_weights_are_left_unopened(tiny_decoder: Path, tmp_path: Path) -> None:
    """A hub folder often ships both formats: the safetensors load, the pickle is never touched."""
    folder = _copy(tiny_decoder, tmp_path)
    marker = tmp_path / "unpickled"
    _plant_pickle(folder / "pytorch_model.bin", marker)
    _plant_pickle(folder / "training_args.bin", marker)
    model = load_model(_decoder(folder), head="causal_lm")
    assert model.config.model_type == "llama" and not marker.exists()


@pytest.mark.parametrize("config_name", ["config.json", "tokenizer_config.json"])
def test_auto_map_custom_code_is_refused(tiny_decoder: Path, tmp_path: Path, config_name: str) -> None:
    folder = _copy(tiny_decoder, tmp_path)
    config = json.loads((folder / config_name).read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
                          "AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / config_name).write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (folder / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(UserError, match="auto_map.*never runs"):
        load_tokenizer(folder)
    with pytest.raises(UserError, match="auto_map.*never runs"):
        load_model(_decoder(folder), head="causal_lm")
    if config_name == "config.json":  # refused as soon as the folder is named as a model
        with pytest.raises(UserError, match="auto_map.*never runs"):
            resolve_model(str(folder))
    assert not marker.exists()


def test_peft_adapter_folder_is_refused(tiny_decoder: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_decoder, tmp_path)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "elsewhere"}))
    with pytest.raises(UserError, match="PEFT adapter"):
        load_model(_decoder(folder), head="causal_lm")


def test_monitor_embedder_goes_through_the_gate(tiny_encoder: Path, tmp_path: Path) -> None:
    from tuneforge.evaluate.embed import TextEncoder
    from tuneforge.deploy.monitor import embed, monitor

    folder = _copy(tiny_encoder, tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    _plant_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(UserError, match="only pickled weights"):
        embed(["a red mug"], str(folder))
    with pytest.raises(UserError, match="only pickled weights"):
        TextEncoder(folder)
    # refused before the run or the log is even read: neither exists here
    with pytest.raises(UserError, match="only pickled weights"):
        monitor(tmp_path / "no-run", tmp_path / "no-log.jsonl", embedder=str(folder))
    assert not marker.exists()
    assert embed(["a red mug", "a blue cup"], str(tiny_encoder)).shape[0] == 2  # a safe folder still embeds


# ----------------------------------------------------------------------------- user code in a recipe
REWARD_MODULE = "tf_planted_reward"


@pytest.fixture
def planted_reward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A reward module on sys.path that leaves a marker when imported; returns the marker's path."""
    marker = tmp_path / "reward-imported"
    code = (f"open({str(marker)!r}, 'w').close()\n\n"
            "def reward(completions, examples, task):\n    return [-len(c) / 20 for c in completions]\n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{REWARD_MODULE}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    monkeypatch.delitem(sys.modules, REWARD_MODULE, raising=False)
    monkeypatch.setenv("TUNEFORGE_ALLOW_CODE", "0")  # restored (removed) after the test whatever the CLI sets
    return marker


def _rl_recipe(tiny_decoder: Path, tmp_path: Path, **top: Any) -> dict[str, Any]:
    path = write_jsonl(tmp_path / "x.jsonl", product_rows(8))
    return {"task": "rl", "model": str(tiny_decoder), "method": {"name": "lora", "r": 4, "alpha": 8},
            "data": {"train": str(path), "split": {"validation": 0.0, "test": 0.25}},
            "rl": {"task": "extraction", "reward": f"{REWARD_MODULE}:reward", "group_size": 2, "max_new_tokens": 4,
                   "beta": 0.0},
            "train": {"max_steps": 1, "batch_size": 2, "max_length": 64, "seed": 0, "warmup_steps": 0},
            "eval": {"max_new_tokens": 4, "batch_size": 8, "base": False}, "output": str(tmp_path / "run"), **top}


def test_recipe_key_allow_code_lets_the_reward_import(tiny_decoder: Path, tmp_path: Path, planted_reward: Path) -> None:
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.tasks.base import get_task

    tokenizer = load_tokenizer(tiny_decoder)
    task = get_task(recipe_from_dict(_rl_recipe(tiny_decoder, tmp_path)), tokenizer, "decoder")
    assert not planted_reward.exists()  # building the task imports nothing
    with pytest.raises(UserError, match="--allow-code"):
        _ = task.reward_fn
    allowed = get_task(recipe_from_dict(_rl_recipe(tiny_decoder, tmp_path, allow_code=True)), tokenizer, "decoder")
    assert allowed.reward_fn(["ab", "abcd"], [], allowed) == [-0.1, -0.2] and planted_reward.exists()


def test_malformed_module_spec_is_a_config_error(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge.tasks.rewards import resolve_reward

    with pytest.raises(ConfigError, match="package.module:function"):
        resolve_reward("not a module:reward", allow_code=True)
    with pytest.raises(ConfigError, match="cannot import it"):
        resolve_reward("tf_no_such_module_anywhere:reward", allow_code=True)


def test_reward_code_runs_only_when_training_or_scoring_and_allowed(
        tiny_decoder: Path, tmp_path: Path, planted_reward: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneforge import api
    from tuneforge.cli import main
    from tuneforge.run.model_card import write_model_card

    recipe = _rl_recipe(tiny_decoder, tmp_path)
    # training without permission: refused before any model loads or the run folder is written
    with pytest.raises(UserError, match=f"rl.reward '{REWARD_MODULE}:reward' names Python code.*--allow-code"):
        api.train(recipe, echo=lambda *a: None)
    assert not planted_reward.exists() and not (tmp_path / "run").exists()

    monkeypatch.setenv("TUNEFORGE_ALLOW_CODE", "1")  # what --allow-code sets
    run = api.train(recipe, echo=lambda *a: None).run_dir
    assert planted_reward.exists() and yaml.safe_load((run / "recipe.yaml").read_text())["allow_code"] is False
    assert "reward" in json.loads((run / "report.json").read_text())["tuned"]

    # a fresh process's view: the module not imported, no permission
    monkeypatch.setenv("TUNEFORGE_ALLOW_CODE", "0")
    monkeypatch.delitem(sys.modules, REWARD_MODULE)
    planted_reward.unlink()
    api.load_task(run)
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "Acme red mug size 1"}])
    out = api.predict(run, inputs, tmp_path / "out.jsonl")
    write_model_card(run)
    assert "prediction" in json.loads(out.read_text())  # a random tiny model may extract nothing
    assert not planted_reward.exists() and REWARD_MODULE not in sys.modules  # opened, predicted, described

    with pytest.raises(UserError, match="--allow-code"):  # scoring needs the reward: refused, nothing imported
        api.evaluate(run, echo=lambda *a: None)
    assert main(["eval", str(run)]) == 2 and not planted_reward.exists()
    assert main(["eval", str(run), "--allow-code"]) == 0 and planted_reward.exists()
