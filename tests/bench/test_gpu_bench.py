"""bench/gpu.py, the prepared GPU check, kept working where no GPU is: a tiny CPU run and its FLOP count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import gpu  # noqa: E402
from tuneforge.train.loop import _checkpoint as _CHECKPOINT  # noqa: E402


def test_flops_count_every_matmul_parameter_once() -> None:
    model = gpu.build_model("tiny", 64)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 6 * 2 * model.config.num_hidden_layers * model.config.hidden_size * (64 + 1) / 2
    assert gpu.flops_per_token(model.config, 64, "full", 16) == 6 * matmul + attention
    lora = gpu.flops_per_token(model.config, 64, "lora", 4)
    assert 4 * matmul + attention < lora < 6 * matmul + attention  # no weight gradients for the frozen base


def test_tiny_cpu_run_writes_its_results(tmp_path: Path) -> None:
    out, md = tmp_path / "gpu.json", tmp_path / "GPU_RESULTS.md"
    gpu.main(["--device", "cpu", "--tiny", "--compile", "no", "--method", "full,lora", "--out", str(out),
              "--markdown", str(md)])
    result = json.loads(out.read_text())
    assert [(r["method"], r["steps"]) for r in result["runs"]] == [("full", 3), ("lora", 3)]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] for r in result["runs"])
    assert "| tiny | lora | False |" in md.read_text()
    import tuneforge.train.loop as loop

    assert loop._checkpoint is _CHECKPOINT  # the bench's stand-in is gone: later runs write checkpoints again
