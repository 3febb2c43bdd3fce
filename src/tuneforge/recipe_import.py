"""Axolotl and LLaMA-Factory training configs as the equivalent tuneforge recipe.

Each source is a table of its keys: a key maps to one or more recipe paths (``train.lr``) through a
small function of its value, or is listed as not mapped. Nothing is guessed silently: every key of
the input is either mapped, or named in ``ImportedRecipe.unmapped`` with the reason, and the
assumptions the translation makes (the number of GPUs behind a per-device batch size) are in
``notes``. The recipe is validated by the same schema as a hand-written one before it is written.

Batch sizes: both tools count ``micro_batch_size`` / ``per_device_train_batch_size`` per device and
multiply by ``gradient_accumulation_steps`` and the number of processes. tuneforge's
``train.batch_size`` is the *global* micro-batch (all processes together; each process takes its
shard), and an optimizer step is ``batch_size x grad_accum`` examples. So ``batch_size =
per_device x world_size`` and ``grad_accum`` carries over unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import ConfigError
from tuneforge.recipe import recipe_from_dict
from tuneforge.registry import Registry

Setter = Callable[[Any, "Context"], dict[str, Any]]


@dataclass
class Context:
    """What a key's translation may read besides its own value: the whole config, its folder, the world size."""

    config: dict[str, Any]
    folder: Path
    world_size: int
    notes: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)


@dataclass
class ImportedRecipe:
    source: str
    recipe: dict[str, Any]
    unmapped: list[str]
    notes: list[str]

    def yaml_text(self) -> str:
        """The recipe as YAML, headed by comments naming the source, the assumptions and the keys not mapped."""
        head = [f"# imported from a {self.source} config by `tuneforge recipe import`"]
        head += [f"# note: {n}" for n in self.notes]
        head += [f"# not mapped: {u}" for u in self.unmapped]
        return "\n".join(head) + "\n" + yaml.safe_dump(self.recipe, sort_keys=False)


@dataclass
class Source:
    """One tool's config dialect: how to recognise it and what each of its keys becomes."""

    name: str
    #: keys only this tool writes; a config holding any of them is this tool's
    marks: tuple[str, ...]
    keys: dict[str, Setter]
    #: keys that change nothing in a tuneforge run (logging cadence, hub pushes): named as ignored, not as lost
    ignored: tuple[str, ...] = ()


SOURCES: Registry[Source] = Registry("recipe import source")


def _to(path: str, convert: Callable[[Any], Any] = lambda v: v) -> Setter:
    return lambda value, ctx: {path: convert(value)}


def _skip_if(falsy: Setter) -> Setter:
    """The setter, applied only when the value is set (a ``false`` flag or ``null`` maps to nothing)."""
    return lambda value, ctx: falsy(value, ctx) if value not in (None, False, "", []) else {}


def _batch(value: Any, ctx: Context) -> dict[str, Any]:
    if ctx.world_size > 1:
        ctx.notes.append(f"train.batch_size = {value} per device x {ctx.world_size} processes (it is the global batch)")
    else:
        ctx.notes.append("train.batch_size is the global micro-batch; the per-device value was taken for one "
                         "process (rerun with --world-size N for N GPUs)")
    return {"train.batch_size": int(value) * ctx.world_size}


def _dtype(name: str) -> Setter:
    return _skip_if(lambda value, ctx: {"train.dtype": name})


def _targets(value: Any, ctx: Context) -> dict[str, Any]:
    """LLaMA-Factory's ``lora_target: all`` or ``q_proj,v_proj``; Axolotl's list."""
    if value in ("all", ["all"]):
        return {"method.target_modules": "all-linear"}
    names = value.split(",") if isinstance(value, str) else list(value)
    return {"method.target_modules": [n.strip() for n in names if n.strip()]}


def _quantize(value: Any, ctx: Context) -> dict[str, Any]:
    if value in (4, "4", True):
        return {"method.quantize": "4bit"}
    ctx.unmapped.append(f"quantization {value!r} (only 4-bit QLoRA is supported: method.quantize: 4bit)")
    return {}


_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant",
               "constant_with_warmup": "constant", "cosine_with_restarts": "cosine"}
_PREF_LOSSES = {"sigmoid": "dpo", "dpo": "dpo", "ipo": "ipo", "orpo": "orpo", "simpo": "simpo", "kto": "kto",
                "kto_pair": "kto"}
_TRACKERS = {"tensorboard", "mlflow", "wandb", "trackio"}


def _scheduler(value: Any, ctx: Context) -> dict[str, Any]:
    if value in _SCHEDULERS:
        return {"train.scheduler": _SCHEDULERS[value]}
    ctx.unmapped.append(f"lr scheduler {value!r} (tuneforge has linear, cosine, constant)")
    return {}


def _report_to(value: Any, ctx: Context) -> dict[str, Any]:
    names = [value] if isinstance(value, str) else list(value or [])
    kept = [n for n in names if n in _TRACKERS]
    ctx.unmapped += [f"report_to {n!r} (tuneforge reports to {', '.join(sorted(_TRACKERS))})"
                     for n in names if n not in _TRACKERS | {"none"}]
    return {"train.report_to": kept} if kept else {}


# ----------------------------------------------------------------------------- Axolotl
_AXOLOTL_FORMATS = {"alpaca": "alpaca", "sharegpt": "sharegpt", "chat_template": "messages", "completion": "text"}


def _axolotl_datasets(value: Any, ctx: Context, split: str = "train") -> dict[str, Any]:
    sets = value if isinstance(value, list) else [value]
    first = sets[0] if sets and isinstance(sets[0], dict) else {}
    out: dict[str, Any] = {}
    if "path" in first:
        out[f"data.{split}"] = first["path"] if first.get("data_files") is None else first["data_files"]
    kind = str(first.get("type", "")).split(":")[0]
    if kind in _AXOLOTL_FORMATS and split == "train":
        out["data.format"] = _AXOLOTL_FORMATS[kind]
        if kind == "completion":
            out["task"] = "language_modeling"
    elif kind and split == "train":
        ctx.unmapped.append(f"dataset type {first.get('type')!r} (read as data.format: auto)")
    if "field_messages" in first:
        out["data.messages_field"] = first["field_messages"]
    ctx.unmapped += [f"{split} dataset {s.get('path') if isinstance(s, dict) else s!r} (one file per split; "
                     "merge the files or list them as a glob)" for s in sets[1:]]
    return out


def _axolotl_adapter(value: Any, ctx: Context) -> dict[str, Any]:
    if value == "lora":
        return {"method.name": "lora"}
    if value == "qlora":
        return {"method.name": "lora", "method.quantize": "4bit"}
    ctx.unmapped.append(f"adapter {value!r}")
    return {}


def _axolotl_rl(value: Any, ctx: Context) -> dict[str, Any]:
    if value in _PREF_LOSSES:
        return {"task": "preference", "preference.loss": _PREF_LOSSES[value]}
    ctx.unmapped.append(f"rl {value!r} (tuneforge's rl task is GRPO on a reward function: task: rl)")
    return {}


#: keys both tools take from Hugging Face's TrainingArguments, with the same meaning in each
TRAINER_KEYS: dict[str, Setter] = {
    "gradient_accumulation_steps": _to("train.grad_accum", int),
    "max_steps": _skip_if(_to("train.max_steps", int)),
    "learning_rate": _to("train.lr", float),
    "warmup_steps": _skip_if(_to("train.warmup_steps", int)),
    "warmup_ratio": _skip_if(_to("train.warmup_fraction", float)),
    "weight_decay": _to("train.weight_decay", float),
    "max_grad_norm": _to("train.max_grad_norm", float),
    "seed": _to("train.seed", int),
    "eval_steps": _skip_if(_to("train.eval_every", int)),
    "bf16": _dtype("bfloat16"),
    "fp16": _dtype("float16"),
}


SOURCES.register("axolotl")(Source(
    name="axolotl",
    marks=("base_model", "micro_batch_size", "sequence_len", "adapter", "lora_target_linear", "num_epochs"),
    keys={
        "base_model": _to("model"),
        **TRAINER_KEYS,
        "datasets": _axolotl_datasets,
        "test_datasets": lambda v, ctx: _axolotl_datasets(v, ctx, "test"),
        "val_set_size": _skip_if(_to("data.split.validation", float)),
        "dataset_prepared_path": lambda v, ctx: {},
        "adapter": _axolotl_adapter,
        "load_in_4bit": _skip_if(lambda v, ctx: {"method.quantize": "4bit"}),
        "lora_r": _to("method.r", int),
        "lora_alpha": _to("method.alpha", float),
        "lora_dropout": _to("method.dropout", float),
        "lora_target_modules": _skip_if(_targets),
        "lora_target_linear": _skip_if(lambda v, ctx: {"method.target_modules": "all-linear"}),
        "peft_use_dora": _to("method.use_dora", bool),
        "peft_use_rslora": _to("method.use_rslora", bool),
        "sequence_len": _to("train.max_length", int),
        "sample_packing": _to("train.speed.packing", bool),
        "micro_batch_size": _batch,
        "num_epochs": _to("train.epochs", float),
        "lr_scheduler": _scheduler,
        "gradient_checkpointing": _to("train.gradient_checkpointing", bool),
        "flash_attention": _skip_if(lambda v, ctx: {"train.attention": "flash_attention_2"}),
        "sdp_attention": _skip_if(lambda v, ctx: {"train.attention": "sdpa"}),
        "early_stopping_patience": _skip_if(lambda v, ctx: {"train.early_stopping": {"patience": int(v)}}),
        "output_dir": _to("output"),
        "system_prompt": _to("prompt.system"),
        "default_system_message": _to("prompt.system"),
        "rl": _skip_if(_axolotl_rl),
        "rl_beta": _to("preference.beta", float),
        "dpo_beta": _to("preference.beta", float),
        "wandb_project": _skip_if(lambda v, ctx: {"train.report_to": ["wandb"]}),
        "use_tensorboard": _skip_if(lambda v, ctx: {"train.report_to": ["tensorboard"]}),
        "use_mlflow": _skip_if(lambda v, ctx: {"train.report_to": ["mlflow"]}),
        "save_total_limit": _to("train.keep_checkpoints", int),
    },
    ignored=("base_model_config", "model_type", "tokenizer_type", "strict", "logging_steps", "save_steps",
             "saves_per_epoch", "evals_per_epoch", "wandb_entity", "wandb_name", "wandb_watch", "wandb_log_model",
             "wandb_run_id", "hub_model_id", "push_to_hub", "train_on_inputs", "group_by_length", "tf32",
             "pad_to_sequence_len", "eval_sample_packing", "xformers_attention", "resume_from_checkpoint",
             "local_rank", "debug", "special_tokens", "optimizer", "trust_remote_code", "load_in_8bit"),
))


# ----------------------------------------------------------------------------- LLaMA-Factory
_STAGES = {"sft": "generation", "dpo": "preference", "kto": "preference", "rm": "reward_model",
           "pt": "language_modeling"}
_LF_FORMATS = {"alpaca": "alpaca", "sharegpt": "sharegpt"}


def _lf_dataset(split: str) -> Setter:
    """A dataset name of ``dataset_info.json`` (in ``dataset_dir``, default ``data``) as its file and layout."""

    def convert(value: Any, ctx: Context) -> dict[str, Any]:
        names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
        folder = ctx.folder / str(ctx.config.get("dataset_dir", "data"))
        info_path = folder / "dataset_info.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        entry = info.get(names[0])
        ctx.unmapped += [f"{split} dataset {n!r} (one file per split; merge the files)" for n in names[1:]]
        if not isinstance(entry, dict) or "file_name" not in entry:
            ctx.unmapped.append(f"dataset {names[0]!r}: not a file in {info_path} (set data.{split} by hand)")
            return {}
        out: dict[str, Any] = {f"data.{split}": str(folder / entry["file_name"])}
        fmt = _LF_FORMATS.get(entry.get("formatting", "alpaca"))
        if split == "train" and fmt and ctx.config.get("stage", "sft") == "sft":
            out["data.format"] = fmt
        columns = entry.get("columns", {})
        if isinstance(columns, dict) and columns.get("messages", "conversations") != "conversations":
            ctx.unmapped.append(f"dataset {names[0]!r}: column mapping {columns} (rename the fields)")
        return out

    return convert


def _lf_finetuning(value: Any, ctx: Context) -> dict[str, Any]:
    known = {"lora": "lora", "full": "full", "freeze": "freeze"}
    if value in known:
        return {"method.name": known[value]}
    ctx.unmapped.append(f"finetuning_type {value!r}")
    return {}


def _lf_stage(value: Any, ctx: Context) -> dict[str, Any]:
    if value in _STAGES:
        return {"task": _STAGES[value], **({"preference.loss": "kto"} if value == "kto" else {})}
    ctx.unmapped.append(f"stage {value!r} (tuneforge's rl task is GRPO on a reward function: task: rl)")
    return {}


def _lf_pref_loss(value: Any, ctx: Context) -> dict[str, Any]:
    if value in _PREF_LOSSES:
        return {"preference.loss": _PREF_LOSSES[value]}
    ctx.unmapped.append(f"pref_loss {value!r}")
    return {}


SOURCES.register("llama-factory")(Source(
    name="llama-factory",
    marks=("model_name_or_path", "finetuning_type", "stage", "cutoff_len", "per_device_train_batch_size"),
    keys={
        "model_name_or_path": _to("model"),
        **TRAINER_KEYS,
        "stage": _lf_stage,
        "finetuning_type": _lf_finetuning,
        "dataset": _lf_dataset("train"),
        "eval_dataset": _lf_dataset("validation"),
        "dataset_dir": lambda v, ctx: {},
        "val_size": _skip_if(_to("data.split.validation", float)),
        "max_samples": _to("data.max_train_rows", int),
        "lora_rank": _to("method.r", int),
        "lora_alpha": _to("method.alpha", float),
        "lora_dropout": _to("method.dropout", float),
        "lora_target": _targets,
        "use_dora": _to("method.use_dora", bool),
        "use_rslora": _to("method.use_rslora", bool),
        "quantization_bit": _skip_if(_quantize),
        "cutoff_len": _to("train.max_length", int),
        "packing": _to("train.speed.packing", bool),
        "per_device_train_batch_size": _batch,
        "per_device_eval_batch_size": _to("eval.batch_size", int),
        "num_train_epochs": _to("train.epochs", float),
        "lr_scheduler_type": _scheduler,
        "flash_attn": lambda v, ctx: {"train.attention": "flash_attention_2"} if v == "fa2" else {},
        "pref_beta": _to("preference.beta", float),
        "pref_loss": _lf_pref_loss,
        "default_system": _to("prompt.system"),
        "output_dir": _to("output"),
        "report_to": _report_to,
        "save_total_limit": _to("train.keep_checkpoints", int),
    },
    ignored=("template", "do_train", "do_eval", "logging_steps", "save_steps", "plot_loss", "overwrite_output_dir",
             "overwrite_cache", "preprocessing_num_workers", "dataloader_num_workers", "trust_remote_code",
             "ddp_timeout", "resume_from_checkpoint", "eval_strategy", "evaluation_strategy", "save_strategy",
             "push_to_hub", "hub_model_id", "run_name", "save_only_model", "per_device_eval_batch_size_auto"),
))


# ----------------------------------------------------------------------------- the import
def detect_source(config: dict[str, Any]) -> Source:
    """The tool whose distinctive keys the config holds most of."""
    scores = {name: sum(k in config for k in SOURCES.get(name).marks) for name in SOURCES}
    best = max(scores, key=lambda n: scores[n])
    if scores[best] == 0:
        raise ConfigError(f"cannot tell which tool wrote this config (no key of {', '.join(sorted(scores))} "
                          "configs such as base_model or model_name_or_path); pass --source")
    return SOURCES.get(best)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(node.get(leaf), list) and isinstance(value, list):
            node[leaf] = list(dict.fromkeys(node[leaf] + value))  # several tracker keys add up
        else:
            node[leaf] = value
    return out


def import_config(path: Path | str, *, source: str | None = None, world_size: int = 1) -> ImportedRecipe:
    """The tuneforge recipe equivalent to an Axolotl or LLaMA-Factory YAML config, validated by the schema."""
    path = Path(path)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of settings, got {type(config).__name__}")
    if world_size < 1:
        raise ConfigError("--world-size must be at least 1")
    src = SOURCES.get(source) if source else detect_source(config)
    ctx = Context(config=config, folder=path.parent, world_size=world_size)
    flat: dict[str, Any] = {"task": "generation", "method.name": "full"}
    for key, value in config.items():
        if key in src.keys:
            for target, converted in src.keys[key](value, ctx).items():
                merged = flat.get(target)
                flat[target] = merged + converted if isinstance(merged, list) and isinstance(converted, list) \
                    else converted
        elif key not in src.ignored:
            ctx.unmapped.append(f"{key}: {json.dumps(value, default=str)}")
    if flat["method.name"] != "lora":  # LoRA-only keys of a full or freeze run would fail the schema
        for key in [k for k in flat if k.startswith("method.") and k != "method.name"]:
            ctx.unmapped.append(f"{key} (only for method lora; this config trains {flat['method.name']})")
            del flat[key]
    if "data.train" not in flat:  # the schema needs one; a placeholder the user must replace, said loudly
        flat["data.train"] = "SET-ME.jsonl"
        ctx.unmapped.append("no training data file could be read from the config: data.train is SET-ME.jsonl")
    if "train.report_to" in flat:
        flat["train.report_to"] = list(dict.fromkeys(flat["train.report_to"]))
    recipe = _nest(flat)
    recipe_from_dict(recipe, source=str(path), base_dir=path.parent, check_files=False)  # the schema has the last word
    return ImportedRecipe(source=src.name, recipe=recipe, unmapped=ctx.unmapped, notes=ctx.notes)
