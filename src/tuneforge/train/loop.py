"""THE training loop: one, readable, on accelerate.

Why our own loop on ``accelerate`` rather than ``transformers.Trainer``: every method, task and
loss plugs in through two calls (``task.loss`` and ``method.prepare``), and what a run adds to a step
(EWC, DP-SGD, the forgetting check, a task's per-step figures such as RL's reward, KL and response
length, a sweep's pruning) is a step hook (``train/hooks.py``), never a copy of the loop. The loss is
normalised by the number of answer tokens in the whole accumulated step (Trainer's per-micro-batch
mean weights short answers wrongly under gradient accumulation), a NaN stops the run with a message instead
of silently saving garbage, and resume is exact: batches come from a seeded per-epoch
permutation, so the step number alone says where to continue. accelerate gives device
placement, mixed precision and DDP/FSDP from configuration (``accelerate launch``, ``torchrun``).

Under several processes ``train.batch_size`` stays the global batch: every process draws the same
seeded micro-batches and takes its shard of each (rank r takes examples r, r + W, ...), the answer
tokens are counted over the whole step on all processes (one all-reduce), and each loss is scaled by
the process count to undo DDP's gradient averaging, so the update equals the one-process update.
Only the main process writes to the run folder.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from tuneforge.accel import compile_blocks, training_forms
from tuneforge.errors import TrainingError
from tuneforge.methods.base import Method
from tuneforge.recipe import TrainConfig
from tuneforge.run.folder import RunDir
from tuneforge.tasks.base import Encoded, Task
from tuneforge.tasks.packing import pack_rows
from tuneforge.train.hooks import TaskMetrics, TrainHook, check_processes, gradient_hook
from tuneforge.train.hooks import ValidationHook as ValidationHook  # re-exported: what api.train(on_validation=) takes
from tuneforge.train.preflight import resolve_frozen_dtype
from tuneforge.train.state import TrainState
from tuneforge.train.checkpoint import (
    load_best,
    load_checkpoint,
    prune_checkpoints,
    remove_partial_writes,
    resume_point,
    save_best,
    save_checkpoint,
    trim_metrics,
)

#: validation metric (name -> value) computed on the current model
Validator = Callable[[nn.Module], dict[str, float]]


def steps_per_epoch(n_examples: int, cfg: TrainConfig) -> int:
    micro = math.ceil(n_examples / cfg.batch_size)
    return max(1, math.ceil(micro / cfg.grad_accum))


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    assert cfg.epochs is not None
    return max(1, math.ceil(cfg.epochs * steps_per_epoch(n_examples, cfg)))


def epoch_batches(lengths: list[int], cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """The micro-batches of one epoch: a seeded shuffle, grouped by length, in a seeded order.

    Length grouping (as in Trainer's ``group_by_length``): within windows of 32 batches the
    examples are sorted by length, so a batch pads to a similar length instead of to the longest
    random neighbour; the batch order is then shuffled again so training still sees a random mix.
    With packing there is no padding to save, so batches are plain random draws: grouped, whole
    steps of one length (``speed.micro_batch_tokens``) reached 0.08 higher validation loss on SNIPS slots
    than random steps (docs/scale.md), likely because the loss is normalised per step.
    The epoch is padded to a whole number of optimizer steps by wrapping to its own start.
    """
    n = len(lengths)
    gen = torch.Generator().manual_seed(cfg.seed + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    micro_per_epoch = steps_per_epoch(n, cfg) * cfg.grad_accum
    order = order + order[: max(0, micro_per_epoch * cfg.batch_size - n)]
    if cfg.speed.packing:  # packed rows carry no padding to save, and grouping would make whole steps one length
        grouped = order
    else:
        window = cfg.batch_size * 32
        grouped = [i for start in range(0, len(order), window)
                   for i in sorted(order[start : start + window], key=lambda i: -lengths[i])]
    batches = [grouped[k : k + cfg.batch_size] for k in range(0, len(grouped), cfg.batch_size)]
    shuffle = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in shuffle][:micro_per_epoch]


def micro_batches(lengths: list[int], cfg: TrainConfig, start_step: int) -> Iterator[list[int]]:
    """Index lists of micro-batches from ``start_step`` on: step k sees the same examples after a resume."""
    micro_per_epoch = steps_per_epoch(len(lengths), cfg) * cfg.grad_accum
    epoch, pos = divmod(start_step * cfg.grad_accum, micro_per_epoch)
    while True:
        batches = epoch_batches(lengths, cfg, epoch)
        yield from batches[pos:]
        epoch, pos = epoch + 1, 0


def split_by_tokens(indices: list[int], lengths: Sequence[int] | Mapping[int, int], budget: int) -> list[list[int]]:
    """One step's examples as micro-batches of at most ``budget`` tokens (first-fit decreasing, as packing).

    Why: a step of a fixed number of examples per micro-batch peaks at its longest micro-batch (with
    length grouping, four long examples together), so memory is sized for the worst case while most
    micro-batches are small. Capping tokens instead bounds the peak and fills every micro-batch close
    to the cap. The step's loss is normalised by all its answer tokens, so any split gives the same
    update. The recipe keeps ``budget >= max_length``, so every example fits.

    >>> split_by_tokens([0, 1, 2, 3], [100, 300, 200, 150], 400)
    [[1, 0], [2, 3]]
    """
    rows = pack_rows([lengths[i] for i in indices], budget)
    return [[indices[j] for j in row] for row in rows]


def build_optimizer(model: nn.Module, method: Method[Any], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the method's parameter groups (per-layer rates for discriminative fine-tuning)."""
    return torch.optim.AdamW(method.param_groups(model, cfg.lr, cfg.weight_decay), lr=cfg.lr)


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_fraction * steps)


def _improved(value: float, best: float | None, lower_is_better: bool, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if lower_is_better else value > best + min_delta


def fit(
    model: nn.Module,
    train: list[Encoded],
    cfg: TrainConfig,
    hooks: Sequence[TrainHook] = (),
    *,
    task: Task,
    method: Method[Any],
    run: RunDir,
    accelerator: Accelerator,
    resume: bool = False,
    validate: Validator | None = None,
    lower_is_better: bool = True,
) -> TrainState:
    """Train ``model`` in place and leave the best weights in it (when there was validation).

    ``hooks`` add to the step (``train/hooks.py``): EWC's penalty, DP-SGD's private gradients, the
    forgetting measurement, a sweep's pruning; the task's own per-step figures always come along.
    ``validate`` scores the model every ``eval_every`` steps, for early stopping and the best weights.
    """
    hooks = [*hooks, TaskMetrics(task)]
    check_processes(hooks, accelerator.num_processes)
    private = gradient_hook(hooks)
    for hook in hooks:
        hook.on_start(model)
    steps = total_steps(len(train), cfg)
    per_epoch = steps_per_epoch(len(train), cfg)
    eval_every = cfg.eval_every or per_epoch
    optimizer = build_optimizer(model, method, cfg)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=warmup_steps(cfg, steps),
                              num_training_steps=steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = _resume(run, resume, accelerator, method, model, optimizer, scheduler, steps)
    if cfg.gradient_checkpointing:
        accelerator.unwrap_model(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.speed.compile:
        compile_blocks(accelerator.unwrap_model(model))
    model.train()
    frozen_dtype = resolve_frozen_dtype(cfg, accelerator.device.type)
    with training_forms(accelerator.unwrap_model(model), cfg.speed, frozen_dtype=frozen_dtype, spill_to=run.root,
                        sharded=accelerator.distributed_type.value == "FSDP", per_example=private is not None):
        batches = micro_batches([len(e.input_ids) for e in train], cfg, state.step)
        bar = tqdm(total=steps, initial=state.step, desc="train", dynamic_ncols=True,
                   disable=not accelerator.is_main_process)
        while state.step < steps and not state.stopped_early:
            started = time.perf_counter()
            torch.manual_seed(cfg.seed + state.step)  # dropout masks of step k are the same after a resume
            method.on_step(accelerator.unwrap_model(model), state.step, per_epoch)
            loss_value, n_tokens = _one_step(model, task, train, batches, optimizer, cfg, accelerator, hooks)
            if not math.isfinite(loss_value):
                if accelerator.is_main_process:
                    run.log({"step": state.step + 1, "event": "nan", "loss": loss_value})
                raise TrainingError(
                    f"the training loss became {loss_value} at step {state.step + 1}; nothing was saved from this step. "
                    f"Lower train.lr (now {cfg.lr}), add warm-up, or check the data; "
                    f"`tuneforge train --resume` continues from the last good checkpoint."
                )
            scheduler.step()
            state.step += 1
            state.tokens += n_tokens
            state.seconds += time.perf_counter() - started
            entry = {"step": state.step, "epoch": state.step / per_epoch, "loss": loss_value,
                     "lr": scheduler.get_last_lr()[0], "tokens": state.tokens,
                     "tokens_per_s": state.tokens / max(state.seconds, 1e-9)}
            for hook in hooks:
                entry.update(hook.on_step_end(state.step))
            if accelerator.is_main_process:
                run.log(entry)
                for hook in hooks:
                    hook.on_logged(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{entry['lr']:.2e}")
            if state.step % eval_every == 0 or state.step == steps:
                if validate is not None:
                    _evaluate(model, validate, state, cfg, run, accelerator, method, lower_is_better)
                    stops = [hook.on_validation(state.step, steps, state.history[-1]) for hook in hooks]
                    state.stopped_early = state.stopped_early or any(stops)
                _checkpoint(model, state, run, accelerator, method, optimizer, scheduler, cfg)
        bar.close()
    _restore_best(model, state, run, accelerator, method)
    for hook in hooks:
        hook.on_end(accelerator.unwrap_model(model))
    return state


def _resume(run: RunDir, resume: bool, accelerator: Accelerator, method: Method[Any], model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> TrainState:
    """The state to start from: a fresh one, or the newest checkpoint that verifies.

    On a resume the log is cut back to that checkpoint's step (the steps after it are trained and
    logged again) and what a killed checkpoint write left is removed.
    """
    if not resume:
        return TrainState()
    ckpt = resume_point(run, accelerator.print)
    state = TrainState()
    if ckpt is not None:
        state = TrainState(**load_checkpoint(ckpt, model=accelerator.unwrap_model(model), method=method,
                                             optimizer=optimizer, scheduler=scheduler))
        accelerator.print(f"resuming from {ckpt.name} (step {state.step} of {steps})")
    if accelerator.is_main_process:
        trim_metrics(run, state.step)
        remove_partial_writes(run)
    return state


def _one_step(model: nn.Module, task: Task, train: list[Encoded], batches: Iterator[list[int]],
              optimizer: torch.optim.Optimizer, cfg: TrainConfig, accelerator: Accelerator,
              hooks: Sequence[TrainHook]) -> tuple[float, int]:
    """One optimizer step over ``grad_accum`` micro-batches, loss averaged over all their answer tokens.

    A hook that computes the gradients itself (DP-SGD) takes the step's examples instead; every hook
    may then add an extra term's gradient (EWC) before clipping.
    """
    micro_idx = [shard(next(batches), accelerator) for _ in range(cfg.grad_accum)]
    budget = cfg.speed.micro_batch_tokens
    if budget is not None:
        step = [i for idx in micro_idx for i in idx]
        micro_idx = split_by_tokens(step, {i: len(train[i].input_ids) for i in step}, budget)
    private = gradient_hook(hooks)
    if private is not None:
        examples = [train[i] for idx in micro_idx for i in idx]
        total = private.gradients(model, task, examples, accelerator)
        n_total = sum(e.n_answer for e in examples)
    else:
        total, n_total = _accumulate(model, task, [task.collate([train[i] for i in idx]) for idx in micro_idx],
                                     accelerator)
    for hook in hooks:
        total += hook.on_backward(model, accelerator.backward)
    if cfg.max_grad_norm is not None:
        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
    if math.isfinite(total):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, n_total


def shard(indices: list[int], accelerator: Accelerator) -> list[int]:
    """This process's part of a global micro-batch: every ``num_processes``-th example from its rank on."""
    if accelerator.num_processes == 1:
        return indices
    if len(indices) < accelerator.num_processes:
        raise TrainingError(f"a micro-batch of {len(indices)} examples cannot be shared by {accelerator.num_processes} "
                            "processes; raise train.batch_size (it is the global batch) or use fewer processes")
    return indices[accelerator.process_index :: accelerator.num_processes]


def _accumulate(model: nn.Module, task: Task, micro: list[dict[str, torch.Tensor]],
                accelerator: Accelerator) -> tuple[float, int]:
    """Backward through every micro-batch; the loss is normalised by the answer tokens of the whole step.

    With W processes the count is summed over all of them, and each loss is multiplied by W because
    DDP averages the W gradients where the one-process gradient is their sum. Gradients are
    synchronised once per step, on the last micro-batch.
    """
    n_total = sum(_loss_positions(b) for b in micro)
    world = accelerator.num_processes
    if world > 1:
        n_total = int(accelerator.reduce(torch.tensor(n_total, device=accelerator.device), reduction="sum"))
    total = 0.0
    for k, batch in enumerate(micro):
        batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        with accelerator.no_sync(model) if k < len(micro) - 1 else nullcontext():
            with accelerator.autocast():
                loss_sum, _ = task.loss(model, batch, training=True)
            loss = loss_sum * world / max(n_total, 1)
            accelerator.backward(loss)
        total += float(loss.detach()) / world
    if world > 1:
        total = float(accelerator.reduce(torch.tensor(total, device=accelerator.device), reduction="sum"))
    return total, n_total


def _loss_positions(batch: dict[str, torch.Tensor]) -> int:
    labels = batch["labels"]
    return int(labels.numel()) if labels.ndim == 1 else int((labels[:, 1:] != -100).sum())


def _evaluate(model: nn.Module, validate: Validator, state: TrainState, cfg: TrainConfig, run: RunDir,
              accelerator: Accelerator, method: Method[Any], lower_is_better: bool) -> None:
    metrics = validate(accelerator.unwrap_model(model))  # generation needs the model, not its DDP wrapper
    model.train()
    watched = cfg.early_stopping.metric if cfg.early_stopping else "loss"
    value = metrics[watched]
    min_delta = cfg.early_stopping.min_delta if cfg.early_stopping else 0.0
    if _improved(value, state.best_metric, lower_is_better, min_delta):
        state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
        if accelerator.is_main_process:
            save_best(run, method.trainable_state(accelerator.unwrap_model(model)))
    else:
        state.bad_evals += 1
    if cfg.early_stopping and state.bad_evals >= cfg.early_stopping.patience:
        state.stopped_early = True
    record = {"step": state.step, "event": "validation", **{f"val_{k}": v for k, v in metrics.items()},
              "best_step": state.best_step, "stopped_early": state.stopped_early}
    state.history.append(record)
    if accelerator.is_main_process:
        run.log(record)
    accelerator.print(f"step {state.step}: " + ", ".join(f"val_{k}={v:.4f}" for k, v in metrics.items())
                      + (" (best)" if state.best_step == state.step else ""))


def _checkpoint(model: nn.Module, state: TrainState, run: RunDir, accelerator: Accelerator, method: Method[Any],
                optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig) -> None:
    if accelerator.is_main_process:
        save_checkpoint(run, dataclasses.asdict(state), model=accelerator.unwrap_model(model), method=method,
                        optimizer=optimizer, scheduler=scheduler)
        prune_checkpoints(run, keep=cfg.keep_checkpoints, step=state.step)


def _restore_best(model: nn.Module, state: TrainState, run: RunDir, accelerator: Accelerator, method: Method[Any]) -> None:
    best = run.checkpoints / "best"
    accelerator.wait_for_everyone()  # the main process wrote it
    if state.best_step is not None and state.best_step != state.step and best.is_dir():
        method.load_trainable(accelerator.unwrap_model(model), load_best(run))
        accelerator.print(f"kept the best weights, from step {state.best_step}")
