"""`tuneforge recipe import`: Axolotl and LLaMA-Factory configs become a valid recipe; what is lost is listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.recipe import recipe_from_dict
from tuneforge.recipe_import import import_config

AXOLOTL = """\
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
datasets:
  - path: chats.jsonl
    type: chat_template
    field_messages: conversation
  - path: more.jsonl
    type: alpaca
val_set_size: 0.05
adapter: qlora
load_in_4bit: true
lora_r: 8
lora_alpha: 16
lora_dropout: 0.1
lora_target_linear: true
sequence_len: 1024
sample_packing: true
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 3
learning_rate: 0.0002
lr_scheduler: cosine
warmup_ratio: 0.1
bf16: true
wandb_project: my-project
output_dir: ./outputs/lora-out
logging_steps: 1
special_tokens: {pad_token: "<pad>"}
deepspeed: deepspeed_configs/zero2.json
"""

LLAMA_FACTORY = """\
model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_target: q_proj,v_proj
dataset: my_chats
dataset_dir: data
template: qwen
cutoff_len: 2048
max_samples: 1000
per_device_train_batch_size: 4
gradient_accumulation_steps: 2
learning_rate: 1.0e-4
num_train_epochs: 2.0
lr_scheduler_type: cosine_with_min_lr
warmup_ratio: 0.1
val_size: 0.1
report_to: [tensorboard, swanlab]
output_dir: saves/qwen/lora
neftune_noise_alpha: 5
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_axolotl_config(tmp_path: Path) -> None:
    imported = import_config(_write(tmp_path, "axolotl.yml", AXOLOTL), world_size=2)
    r = imported.recipe
    assert imported.source == "axolotl"
    assert r["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert r["method"] == {"name": "lora", "quantize": "4bit", "r": 8, "alpha": 16.0, "dropout": 0.1,
                           "target_modules": "all-linear"}
    assert r["data"] == {"train": "chats.jsonl", "format": "messages", "messages_field": "conversation",
                         "split": {"validation": 0.05}}
    assert r["train"]["batch_size"] == 4 and r["train"]["grad_accum"] == 4  # 2 per device x 2 GPUs: global
    assert r["train"]["max_length"] == 1024 and r["train"]["speed"] == {"packing": True}
    assert r["train"]["scheduler"] == "cosine" and r["train"]["warmup_fraction"] == 0.1
    assert r["train"]["dtype"] == "bfloat16" and r["train"]["report_to"] == ["wandb"]
    assert r["output"] == "./outputs/lora-out"
    assert any("more.jsonl" in u for u in imported.unmapped)
    assert any(u.startswith("deepspeed:") for u in imported.unmapped)
    assert not any("logging_steps" in u or "special_tokens" in u for u in imported.unmapped)  # ignored, not lost
    assert any("2 processes" in n for n in imported.notes)


def test_llama_factory_config_reads_its_dataset_info(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(
        {"my_chats": {"file_name": "chats.json", "formatting": "sharegpt"}}), encoding="utf-8")
    imported = import_config(_write(tmp_path, "lf.yaml", LLAMA_FACTORY))
    r = imported.recipe
    assert imported.source == "llama-factory"
    assert r["task"] == "generation" and r["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert r["method"] == {"name": "lora", "r": 16, "target_modules": ["q_proj", "v_proj"]}
    assert r["data"]["train"] == str(tmp_path / "data" / "chats.json") and r["data"]["format"] == "sharegpt"
    assert r["data"]["max_train_rows"] == 1000 and r["data"]["split"] == {"validation": 0.1}
    assert r["train"]["batch_size"] == 4 and r["train"]["grad_accum"] == 2 and r["train"]["max_length"] == 2048
    assert r["train"]["report_to"] == ["tensorboard"]
    unmapped = "\n".join(imported.unmapped)
    assert "cosine_with_min_lr" in unmapped and "swanlab" in unmapped and "neftune_noise_alpha" in unmapped
    assert "template" not in unmapped  # the model's own chat template is used: nothing lost


def test_the_cli_writes_a_recipe_the_schema_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, "axolotl.yml", AXOLOTL)
    assert main(["recipe", "import", str(config), "-o", str(tmp_path / "r.yaml")]) == 0
    out = capsys.readouterr().out
    assert "from a axolotl config" in out and "not mapped (2):" in out and "deepspeed" in out
    text = (tmp_path / "r.yaml").read_text(encoding="utf-8")
    assert "# not mapped: deepspeed" in text
    recipe = recipe_from_dict(yaml.safe_load(text), check_files=False)
    assert recipe.train.batch_size == 2 and recipe.method.name == "lora"
    assert main(["recipe", "import", str(config), "-o", str(tmp_path / "r.yaml")]) == 2  # no silent overwrite


def test_full_fine_tuning_drops_lora_keys_loudly(tmp_path: Path) -> None:
    imported = import_config(_write(tmp_path, "lf.yaml", "model_name_or_path: m\nfinetuning_type: full\n"
                                    "lora_rank: 8\nstage: dpo\npref_beta: 0.2\n"))
    assert imported.recipe["method"] == {"name": "full"}
    assert imported.recipe["task"] == "preference" and imported.recipe["preference"] == {"beta": 0.2}
    assert any("method.r (only for method lora" in u for u in imported.unmapped)
    assert imported.recipe["data"]["train"] == "SET-ME.jsonl" and any("SET-ME" in u for u in imported.unmapped)


def test_an_unknown_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot tell which tool wrote this config"):
        import_config(_write(tmp_path, "x.yaml", "hello: world\n"))
