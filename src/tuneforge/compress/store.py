"""A compressed model on disk, and building it back from its folder.

The compressed folder is run-like: ``recipe.yaml``, ``data/`` and ``report.json`` as in any run,
and ``model/`` holds ``config.json`` (the compressed architecture: a structurally pruned model
has a smaller ``intermediate_size``), the tokenizer, the generation config, and
``trainable.safetensors`` with *every* weight of the compressed model (not just the trained
ones, as in a run: the compressed model has adapters merged and no base model to add them to).
``compression.json`` marks the folder and says how to rebuild it; ``tuneforge.run.loading.load_run``
sees it and comes here (``build_compressed``), so ``evaluate``, ``predict`` and ``export`` work on the folder unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tuneforge.compress.base import CompressConfig, Compressor, get_compressor

COMPRESSION_FILE = "compression.json"
WEIGHTS_FILE = "trainable.safetensors"


def is_compressed(run_dir: Path | str) -> bool:
    return (Path(run_dir) / COMPRESSION_FILE).is_file()


def save_weights(model: nn.Module, compressor: Compressor, path: Path) -> int:
    """Write the compressed weights as one safetensors file (atomically); returns its size in bytes."""
    tensors, metadata = compressor.state(model)
    metadata = {**metadata, "format": "tuneforge-compressed", "method": compressor.cfg.method}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path.stat().st_size


def save_model_folder(model: nn.Module, compressor: Compressor, tokenizer: Any, folder: Path) -> int:
    """``folder`` gets config, tokenizer, generation config and the weights; returns the weights' size."""
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return save_weights(model, compressor, folder / WEIGHTS_FILE)


def read_compression(run_dir: Path | str) -> dict[str, Any]:
    return json.loads((Path(run_dir) / COMPRESSION_FILE).read_text(encoding="utf-8"))


def build_compressed(folder: Path, head: str, cfg: CompressConfig) -> nn.Module:
    """Rebuild the compressed model in ``folder`` (a ``model/`` folder) from its config and weights."""
    from transformers import AutoConfig, GenerationConfig

    from tuneforge.models.loading import HEADS, check_safe_folder

    check_safe_folder(folder, weights=False)  # its weights are the safetensors file read below
    config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    compressor = get_compressor(cfg)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG as it was
        model = HEADS[head][0].from_config(config)
    model = compressor.skeleton(model)
    path = folder / WEIGHTS_FILE
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if metadata.get("format") != "tuneforge-compressed":
        raise ValueError(f"{path} was not written by `tuneforge compress`")
    compressor.load(model, tensors, metadata)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder, local_files_only=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
