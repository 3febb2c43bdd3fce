"""Step hooks: what a run adds to the one training loop without a copy of it.

Why hooks rather than keyword arguments of ``fit``: EWC, DP-SGD, the forgetting check and a task's
per-step figures each touch the loop at one or two points (before training, the step's gradients,
after the step, after a validation, after training). Each is a small class in its own module that
overrides only those points; the loop calls every hook at every point, in the order given, and
knows none of them by name. A new need is one more hook, not one more parameter.

The points, in the order a run meets them:

- ``on_start(model)``: before anything else, on the untouched model (before accelerate wraps it and
  before a resume loads a checkpoint): EWC estimates its Fisher here, the forgetting check measures.
- ``gradients(model, task, examples, accelerator)``: a hook with ``computes_gradients`` sets the
  step's ``.grad`` itself and returns the step's loss (DP-SGD's per-example clipping and noise); the
  loop's own accumulation is then skipped. At most one hook may do so.
- ``on_backward(model, backward)``: after the step's gradients, before clipping: add an extra loss
  term's gradient through ``backward`` and return its value (EWC's penalty).
- ``on_step_end(step)``: figures merged into the step's line of metrics.jsonl.
- ``on_logged(entry)``: the step's finished line of metrics.jsonl, on the main process (trackers copy it).
- ``on_validation(step, total, record)``: after each validation; True stops training there (a sweep
  prunes through it).
- ``on_end(model)``: after training, on the unwrapped model with the best weights back in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from torch import nn

from tuneforge.errors import TrainingError
from tuneforge.tasks.base import Encoded, Task

#: called after each validation with (step, total steps, the logged validation record); returning True
#: stops training there, as early stopping does (used by `tuneforge sweep` to prune and to score partial runs)
ValidationHook = Callable[[int, int, dict[str, Any]], bool | None]


class TrainHook:
    """One concern added to the loop; every point is a no-op unless a subclass overrides it."""

    #: what error messages call the hook (its class name when empty)
    label: ClassVar[str] = ""
    #: the hook's arithmetic assumes one process (the loop refuses accelerate/torchrun launches with it)
    one_process: ClassVar[bool] = False
    #: the hook computes each step's gradients itself (``gradients``); the speed forms then keep peft's
    #: own LoRA forward, which per-example gradients need
    computes_gradients: ClassVar[bool] = False

    def on_start(self, model: nn.Module) -> None:
        """Before training, on the untouched model."""

    def gradients(self, model: nn.Module, task: Task, examples: list[Encoded], accelerator: Accelerator) -> float:
        """Set the step's gradients from ``examples`` and return the step's loss (``computes_gradients`` only)."""
        raise NotImplementedError(f"{type(self).__name__} does not compute gradients")

    def on_backward(self, model: nn.Module, backward: Callable[[torch.Tensor], None]) -> float:
        """Add an extra term's gradient with ``backward``; return the term's value (added to the step's loss)."""
        return 0.0

    def on_step_end(self, step: int) -> dict[str, float]:
        """Figures for the step's line of metrics.jsonl."""
        return {}

    def on_logged(self, entry: dict[str, Any]) -> None:
        """The step's line of metrics.jsonl as written (main process only)."""

    def on_validation(self, step: int, total: int, record: dict[str, Any]) -> bool:
        """After a validation; True stops training."""
        return False

    def on_end(self, model: nn.Module) -> None:
        """After training, best weights restored."""


class TaskMetrics(TrainHook):
    """The task's own per-step figures (RL: reward, KL, response length; preference: reward margins).

    The loop adds it to every run: ``Task.step_metrics`` returns what ``task.loss`` gathered since the
    last call, so ``on_start`` drops what earlier calls (the preflight's probe) left.
    """

    def __init__(self, task: Task) -> None:
        self.task = task

    def on_start(self, model: nn.Module) -> None:
        self.task.step_metrics()

    def on_step_end(self, step: int) -> dict[str, float]:
        return self.task.step_metrics()


class OnValidation(TrainHook):
    """A plain ``ValidationHook`` function as a hook (what ``api.train(on_validation=...)`` takes)."""

    def __init__(self, callback: ValidationHook) -> None:
        self.callback = callback

    def on_validation(self, step: int, total: int, record: dict[str, Any]) -> bool:
        return bool(self.callback(step, total, record))


def gradient_hook(hooks: Sequence[TrainHook]) -> TrainHook | None:
    """The one hook that computes the gradients, if any."""
    owners = [h for h in hooks if h.computes_gradients]
    if len(owners) > 1:
        raise TrainingError(f"only one hook may compute a step's gradients; got {', '.join(_names(owners))}")
    return owners[0] if owners else None


def check_processes(hooks: Sequence[TrainHook], num_processes: int) -> None:
    """Refuse a several-process launch when a hook's arithmetic assumes one process."""
    single = [h for h in hooks if h.one_process]
    if num_processes > 1 and single:
        raise TrainingError(f"{', '.join(_names(single))} run(s) in one process only; launch without "
                            "accelerate/torchrun")


def _names(hooks: Sequence[TrainHook]) -> list[str]:
    return [h.label or type(h).__name__ for h in hooks]
