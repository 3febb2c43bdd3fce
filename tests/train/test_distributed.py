"""Two CPU processes (torchrun, gloo, DDP through accelerate) train to the weights of one process.

The same recipe runs once as a plain ``tuneforge train`` and once under ``torch.distributed.run
--nproc_per_node 2``; ``train.batch_size`` is the global batch, so both runs see the same examples
per step and must end with the same weights and the same logged losses (up to float summation order).
FSDP is not covered here: accelerate 1.15 turns ``ACCELERATE_USE_FSDP`` into FSDP only for GPU-like
process groups, and wraps CPU (gloo) processes in DDP whatever the setting (see docs/scale.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import base_recipe, chat_rows, product_rows, write_jsonl

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train(recipe: Path, processes: int, registry: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "TUNEFORGE_REGISTRY": str(registry)}
    cli = ["-m", "tuneforge.cli", "train", str(recipe), "--overwrite"]
    if processes > 1:
        cli = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), *cli]
    return subprocess.run([sys.executable, *cli], env=env, capture_output=True, text=True, timeout=120)


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r and "event" not in r]


def _case(name: str) -> tuple[str, list[dict], dict, dict]:
    """(task, rows, train keys, method) of a parametrised case."""
    if name == "packed-full":
        return "extraction", product_rows(24), {}, {"name": "full"}
    rows = chat_rows(24)  # 57-63 tokens: two fit a 120-token micro-batch only when short enough
    for i, row in enumerate(rows):
        row["messages"][0]["content"] += " now" * (i % 3)
    return ("generation", rows, {"micro_batch_tokens": 120, "max_length": 64, "frozen_dtype": "float32"},
            {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0})


@pytest.mark.parametrize("case", ["packed-full", "packed-lora-token-capped"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path, tiny_decoder: Path, case: str) -> None:
    """Token-capped: each process splits its own shard by tokens, so in a step the two processes can run
    different numbers of micro-batches (with these lengths they do); each still synchronises once."""
    task, rows, train_cfg, method = _case(case)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    runs = {}
    for processes in (1, 2):
        raw = base_recipe(tiny_decoder, task, train, tmp_path / f"run{processes}", max_steps=3, lr=1e-2,
                          batch_size=4, grad_accum=2, packing=True, **train_cfg)
        raw["method"] = method
        raw["eval"]["base"] = False
        raw["data"]["split"] = {"validation": 0.0, "test": 0.1}
        recipe = tmp_path / f"recipe{processes}.yaml"
        recipe.write_text(yaml.safe_dump(raw))
        done = _train(recipe, processes, tmp_path / "runs.sqlite")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[processes] = tmp_path / f"run{processes}"
    env = json.loads((runs[2] / "environment.json").read_text())
    assert env["processes"] == 2  # it really ran distributed
    one, two = (load_file(str(runs[n] / "model" / "trainable.safetensors")) for n in (1, 2))
    assert one.keys() == two.keys() and one
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
    assert _losses(runs[2]) == pytest.approx(_losses(runs[1]), rel=1e-5)
    assert not any(runs[2].glob("*.rank*"))  # one writer
