"""``tuneforge demo``: product listings to JSON with SmolLM2-135M-Instruct and LoRA, before and after.

The data set ships in the package (``resources/demo``: 200 listings to train on, 220 held out).
The budget is sized to finish well inside 15 minutes on 2 CPU cores, including both evaluations.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from tuneforge.run.composed import train
from tuneforge.run.folder import RunDir, is_tuneforge_run
from tuneforge.run.pipeline import TrainResult

DEMO_DIR = files("tuneforge") / "resources" / "demo"


def demo_recipe(output: Path | str) -> dict[str, Any]:
    data = Path(str(DEMO_DIR))
    return {
        "task": "extraction",
        "model": "smollm2-135m-instruct",
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.05},
        "data": {
            "train": str(data / "products_train.jsonl"),
            "test": str(data / "products_test.jsonl"),
            "text_field": "text",
            "target_field": "attributes",
            "split": {"validation": 0.1},
        },
        # A short system prompt replaces SmolLM2's default one: fewer tokens to train on and to prefill.
        "prompt": {"system": "You turn product listings into JSON."},
        "train": {"epochs": 2, "lr": 1e-3, "batch_size": 8, "warmup_steps": 5, "max_length": 256, "seed": 0},
        # Decoding on a CPU is bound by reading the weights once per step, so a wide batch is nearly free.
        "eval": {"batch_size": 32, "max_new_tokens": 64},
        "output": str(output),
    }


def run_demo(output: Path | str = "runs/demo", *, overwrite: bool = False, dry_run: bool = False) -> TrainResult:
    """Continue an unfinished demo run, replace a finished one; any other folder is refused by ``train``."""
    run = RunDir(output)
    ours = is_tuneforge_run(run.root)
    resume = ours and not run.is_complete() and not overwrite
    return train(demo_recipe(output), overwrite=overwrite or (ours and run.is_complete()), resume=resume,
                 dry_run=dry_run)
