"""Step hooks: every point of the loop reaches every hook, in order, and the loop knows none by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from conftest import base_recipe, product_rows, write_jsonl
from tuneforge.data.readers import read_records
from tuneforge.errors import TrainingError
from tuneforge.methods import get_method
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.methods.full import FullMethod
from tuneforge.recipe import TrainConfig, recipe_from_dict
from tuneforge.run.folder import RunDir
from tuneforge.tasks.base import Encoded, Task, get_task
from tuneforge.train.hooks import OnValidation, TrainHook, check_processes, gradient_hook
from tuneforge.train.loop import fit


class Recorder(TrainHook):
    """Records the points it is called at and adds a constant term to every step's loss."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.start_weight: torch.Tensor | None = None

    def on_start(self, model: nn.Module) -> None:
        self.calls.append("start")
        self.start_weight = model.get_input_embeddings().weight.detach().clone()

    def on_backward(self, model: nn.Module, backward: Callable[[torch.Tensor], None]) -> float:
        self.calls.append("backward")
        return 0.25  # a term without gradient: the step's logged loss grows by exactly this much

    def on_step_end(self, step: int) -> dict[str, float]:
        self.calls.append("step_end")
        return {"recorded_step": float(step)}

    def on_validation(self, step: int, total: int, record: dict[str, Any]) -> bool:
        self.calls.append("validation")
        return False

    def on_end(self, model: nn.Module) -> None:
        self.calls.append("end")


def _setup(tmp_path: Path, tiny_decoder: Path) -> tuple[Task, list[Encoded], Any]:
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(8))
    recipe = recipe_from_dict(base_recipe(tiny_decoder, "extraction", train, tmp_path / "run"))
    resolved = resolve_model(str(tiny_decoder))
    task = get_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    examples = task.parse(read_records(train), "train")
    task.fit_schema(examples)
    return task, [task.encode(e) for e in examples], resolved


def _fit(tmp_path: Path, resolved: Any, task: Task, train: list[Encoded], hooks: list[TrainHook],
         name: str) -> list[dict[str, Any]]:
    model = load_model(resolved, head="causal_lm")
    cfg = TrainConfig(max_steps=3, eval_every=2, lr=1e-3, batch_size=4)
    fit(model, train, cfg, hooks, task=task, method=get_method(FullMethod()), run=RunDir(tmp_path / name),
        accelerator=Accelerator(cpu=True), validate=lambda m: {"loss": 1.0})
    return [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_every_point_reaches_the_hook_and_the_update_is_unchanged(tmp_path: Path, tiny_decoder: Path) -> None:
    task, train, resolved = _setup(tmp_path, tiny_decoder)
    plain = [e for e in _fit(tmp_path, resolved, task, train, [], "plain") if "loss" in e and "event" not in e]
    hook = Recorder()
    log = _fit(tmp_path, resolved, task, train, [hook], "hooked")
    steps = [e for e in log if "loss" in e and "event" not in e]
    assert hook.calls == ["start", "backward", "step_end", "backward", "step_end", "validation",
                          "backward", "step_end", "validation", "end"]
    assert [e["recorded_step"] for e in steps] == [1.0, 2.0, 3.0]
    # the hook's term is added to the logged loss only: the gradients, and so the next losses, are the same
    assert [e["loss"] for e in steps] == pytest.approx([e["loss"] + 0.25 for e in plain], abs=1e-6)
    assert hook.start_weight is not None


def test_a_validation_hook_stops_training(tmp_path: Path, tiny_decoder: Path) -> None:
    task, train, resolved = _setup(tmp_path, tiny_decoder)
    seen: list[tuple[int, int]] = []
    stop = OnValidation(lambda step, total, record: seen.append((step, total)) or True)
    log = _fit(tmp_path, resolved, task, train, [stop], "run")
    assert seen == [(2, 3)]
    assert max(e["step"] for e in log) == 2 and log[-1]["stopped_early"] is False  # stopped by the hook, after logging


def test_one_process_hooks_refuse_several_processes_and_one_hook_computes_gradients() -> None:
    class Private(TrainHook):
        label = "private"
        one_process = True
        computes_gradients = True

    check_processes([Private()], 1)
    with pytest.raises(TrainingError, match="private run\\(s\\) in one process only"):
        check_processes([TrainHook(), Private()], 2)
    assert gradient_hook([TrainHook()]) is None
    with pytest.raises(TrainingError, match="only one hook"):
        gradient_hook([Private(), Private()])
