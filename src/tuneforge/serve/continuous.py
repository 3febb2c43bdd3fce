"""Continuous batching: answers join and leave the running decode batch between steps, streamed token by token.

Why not ``batching.Batcher`` for generated answers: it runs whole ``predict`` calls, so a request
waits for the batch before it, every row of a batch waits for the longest answer, and nothing can
be streamed until the end. Here one worker thread owns the model and one ``infer.DecodeBatch``;
between two decode steps it prefills the requests that arrived (together, up to ``max_batch`` rows
in the batch) and merges them in; a row leaves the step it finishes, and each step's tokens go
straight to their callers' asyncio queues. The queue of waiting requests is bounded (``QueueFull``),
and a caller that gives up (timeout, disconnect) has its row dropped at the next step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

from transformers import PreTrainedTokenizerBase

from tuneforge.infer import DecodeBatch, Generated, Sampling
from tuneforge.infer.engine import Event
from tuneforge.serve.batching import QueueFull

logger = logging.getLogger(__name__)


@dataclass
class Stream:
    """One answer in flight; the worker puts its ``Event``s (or the error that ended it) on ``events``."""

    key: int
    prompt: list[int]
    rule: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    async def tokens(self) -> AsyncIterator[Event]:
        """The row's events up to and including the one that finishes it."""
        try:
            while True:
                event = await self.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if event.done is not None:
                    return
        finally:
            self.cancelled.set()  # a no-op once finished; otherwise the worker drops the row

    async def result(self) -> Generated:
        async for event in self.tokens():
            if event.done is not None:
                return event.done
        raise RuntimeError("the answer ended without finishing")


class ContinuousBatcher:
    """The decode loop of the server: ``submit`` a prompt, read its ``Stream``."""

    def __init__(self, new_batch: Callable[[], DecodeBatch], *, max_batch: int = 16, queue_size: int = 256,
                 on_step: Callable[[int, int, float], None] | None = None) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be >= 1")
        self.new_batch = new_batch
        self.max_batch = max_batch
        self.on_step = on_step  # (rows, tokens emitted, seconds) after every step, for metrics
        self._queue: queue.Queue[Stream | None] = queue.Queue(maxsize=queue_size)
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tuneforge-decoder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, prompt: list[int], rule: Sampling) -> Stream:
        """Queue one answer; called from the event loop. ``QueueFull`` when ``queue_size`` are waiting."""
        stream = Stream(next(self._keys), prompt, rule, asyncio.get_running_loop())
        try:
            self._queue.put_nowait(stream)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are waiting already") from None
        return stream

    # -- the worker thread --------------------------------------------------------------
    def _arrivals(self, running: int) -> tuple[list[Stream], bool]:
        """Requests that join now (blocking only while nothing runs); the flag says a stop was requested."""
        joining: list[Stream] = []
        while running + len(joining) < self.max_batch:
            try:
                item = self._queue.get() if running + len(joining) == 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return joining, True
            if not item.cancelled.is_set():
                joining.append(item)
        return joining, False

    def _run(self) -> None:
        batch = self.new_batch()
        streams: dict[int, Stream] = {}
        stop = False
        while not stop or len(batch):
            joining, asked = self._arrivals(len(batch)) if not stop else ([], False)
            stop = stop or asked
            gone = {k for k, s in streams.items() if s.cancelled.is_set()}
            for k in gone:
                del streams[k]
            batch.drop(set(gone))
            start = time.perf_counter()
            rows = len(batch) + len(joining)
            try:
                if joining:
                    streams.update({s.key: s for s in joining})
                    events = batch.add([s.key for s in joining], [s.prompt for s in joining], [s.rule for s in joining])
                elif len(batch):
                    events = batch.step()
                else:
                    continue
            except Exception as err:  # every caller in the batch learns of it; the worker keeps serving
                logger.exception("decode step failed")
                for s in streams.values():
                    s.loop.call_soon_threadsafe(s.events.put_nowait, err)
                streams.clear()
                batch = self.new_batch()
                continue
            if self.on_step is not None:  # before the answers go out: a caller that reads metrics sees them
                try:
                    self.on_step(rows, sum(e.token is not None for e in events), time.perf_counter() - start)
                except Exception:  # metrics must never stop the worker
                    logger.exception("on_step hook failed")
            for e in events:
                s = streams[cast(int, e.key)]
                s.loop.call_soon_threadsafe(s.events.put_nowait, e)
                if e.done is not None:
                    del streams[s.key]


class TextDeltas:
    """Turns a row's tokens into text pieces whose concatenation is the final (stripped) answer.

    Held back until it is safe to send: an incomplete UTF-8 character (decoded as U+FFFD), trailing
    whitespace (the offline answer is stripped) and anything that could still become a stop string.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.tokens: list[int] = []
        self.sent = ""

    def add(self, token: int) -> str:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        if text.endswith("\ufffd"):
            return ""
        safe = text.rstrip()
        safe = safe[: max(len(self.sent), len(safe) - self.hold)] if self.hold else safe
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""
        piece, self.sent = safe[len(self.sent) :], safe
        return piece

    def finish(self, done: Generated) -> str:
        final = done.text.strip()
        if not final.startswith(self.sent):  # never expected; the answer is still whole on the client's side
            logger.warning("streamed text is not a prefix of the answer")
            return ""
        piece, self.sent = final[len(self.sent) :], final
        return piece
