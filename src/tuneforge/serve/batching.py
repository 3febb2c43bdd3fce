"""Dynamic batching: many concurrent requests, one model, one batched ``task.predict`` at a time.

Why by hand: the serving libraries that batch (Triton, TorchServe, Ray Serve) each bring a
runtime of their own, and none calls an arbitrary Python function such as ``task.predict`` that
already holds the exact offline prediction logic. What is needed is small: one worker thread
owns the model (PyTorch is not safe to call from many threads at once), takes the first waiting
job, keeps taking jobs until ``max_batch`` examples are gathered or ``batch_wait_ms`` have passed,
runs one prediction over the concatenated examples and hands every job back exactly its own
slice of the outputs (job ``j`` owns positions ``offset_j .. offset_j + n_j``). The queue is
bounded, so a flood of requests is refused at once (``QueueFull``) instead of piling up memory,
and a job whose caller gave up (timeout, disconnect) is skipped rather than computed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)
In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(Exception):
    """The bounded queue holds ``queue_size`` jobs already; the caller should answer 503."""


@dataclass
class BatchStats:
    """What one batched call did, passed to the ``on_batch`` hook (metrics)."""

    n_jobs: int
    n_items: int
    seconds: float
    outputs: Sequence[Any]


@dataclass
class _Job(Generic[In, Out]):
    items: list[In]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Out]]
    abandoned: threading.Event = field(default_factory=threading.Event)


class Batcher(Generic[In, Out]):
    """Run ``predict(items) -> outputs`` (same length, same order) over batches of queued jobs."""

    def __init__(self, predict: Callable[[list[In]], list[Out]], *, max_batch: int = 16, batch_wait_ms: float = 10.0,
                 queue_size: int = 256, on_batch: Callable[[BatchStats], None] | None = None) -> None:
        if max_batch < 1 or queue_size < 1 or batch_wait_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and batch_wait_ms >= 0")
        self.predict = predict
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: queue.Queue[_Job[In, Out] | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tuneforge-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)  # blocks only while the queue is full; the worker keeps draining it
            self._thread.join(timeout)
            self._thread = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    # -- callers (in the event loop) ----------------------------------------------------
    async def submit(self, items: list[In], timeout: float | None = None) -> list[Out]:
        """Queue ``items`` as one job and wait for their outputs; ``QueueFull`` or ``TimeoutError``."""
        loop = asyncio.get_running_loop()
        job: _Job[In, Out] = _Job(list(items), loop, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are waiting already") from None
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except BaseException:  # timeout or the client went away: the worker skips the job if not begun
            job.abandoned.set()
            raise

    # -- the worker thread --------------------------------------------------------------
    def _collect(self, first: _Job[In, Out]) -> tuple[list[_Job[In, Out]], bool]:
        """Jobs for one batch, starting with ``first``; the flag says a stop was requested."""
        jobs, n = [first], len(first.items)
        deadline = time.monotonic() + self.batch_wait
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            if n + len(job.items) > self.max_batch:  # would overflow: it starts the next batch
                self._run_batch(jobs)
                jobs, n = [job], len(job.items)
                deadline = time.monotonic() + self.batch_wait
                continue
            jobs.append(job)
            n += len(job.items)
        return jobs, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            self._run_batch(jobs)
            if stop:
                return

    def _run_batch(self, jobs: list[_Job[In, Out]]) -> None:
        jobs = [j for j in jobs if not j.abandoned.is_set()]
        if not jobs:
            return
        items = [x for j in jobs for x in j.items]
        start = time.perf_counter()
        try:
            outputs = self.predict(items)
            if len(outputs) != len(items):
                raise RuntimeError(f"predict returned {len(outputs)} outputs for {len(items)} inputs")
        except Exception as err:  # every waiting caller learns of it; the worker keeps serving
            for j in jobs:
                j.loop.call_soon_threadsafe(_set_exception, j.future, err)
            return
        seconds = time.perf_counter() - start
        offset = 0
        for j in jobs:
            mine = list(outputs[offset : offset + len(j.items)])
            offset += len(j.items)
            j.loop.call_soon_threadsafe(_set_result, j.future, mine)
        if self.on_batch is not None:
            try:
                self.on_batch(BatchStats(len(jobs), len(items), seconds, outputs))
            except Exception:  # metrics must never stop the worker; the answers are already out
                logger.exception("on_batch hook failed")


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
