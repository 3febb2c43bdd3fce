"""The per-request timeout, derived from the latency the run's preflight measured.

A fixed 120 s was shorter than a SmolLM2 answer under load: a request that waits behind a full
queue waits for every batch ahead of it. The preflight (``preflight.json`` in the run folder)
timed a training step on the run's longest rows, which gives an upper bound on one forward pass
per row: ``mean tokens per row / measured tokens per second`` (a training step is a forward and a
backward, about three forwards). A decoder answers with up to ``eval.max_new_tokens`` more
forwards per row (each costs at most one such pass), an encoder with one. The worst wait is the
whole queue plus the request's own batch, ``queue_size + max_batch`` items one after another
(batching makes it faster, never slower), doubled for a busier machine than the preflight's, never
under 120 s and never over an hour. A ``--timeout`` given by the user always wins.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOOR_S = 120.0
CEILING_S = 3600.0
SAFETY = 2.0
OTHER_DEVICE = 10.0  # the preflight ran on another device than the server's (a GPU run served on a CPU)


@dataclass(frozen=True)
class Timeout:
    seconds: float
    why: str


def preflight_item_seconds(preflight: dict[str, Any]) -> float | None:
    """Seconds of one forward pass over an average training row, from the preflight's measured throughput."""
    throughput = preflight.get("throughput_tokens_per_s")
    data = preflight.get("data") or {}
    rows, tokens = data.get("rows"), data.get("tokens")
    numbers = [x for x in (throughput, rows, tokens) if isinstance(x, (int, float)) and math.isfinite(x) and x > 0]
    if len(numbers) < 3:
        return None
    per_second, n_rows, n_tokens = (float(x) for x in numbers)
    return n_tokens / n_rows / per_second


def derive_timeout(preflight: dict[str, Any] | None, *, forwards_per_item: int, queue_size: int, max_batch: int,
                   device: str) -> Timeout:
    """The timeout for a server whose run measured ``preflight`` (``None``: no preflight to go by)."""
    item = preflight_item_seconds(preflight) if preflight else None
    if item is None:
        return Timeout(FLOOR_S, "default; the run has no measured throughput in preflight.json")
    factor = SAFETY * (OTHER_DEVICE if preflight and preflight.get("device") not in (None, device) else 1.0)
    estimate = item * forwards_per_item * (queue_size + max_batch) * factor
    seconds = min(max(estimate, FLOOR_S), CEILING_S)
    return Timeout(seconds, f"from preflight.json: {item * forwards_per_item:.3g} s per item x "
                            f"{queue_size + max_batch} items (queue + batch) x {factor:g} = {estimate:.0f} s, "
                            f"kept within {FLOOR_S:.0f} to {CEILING_S:.0f} s")


def read_preflight(run_dir: Path | None) -> dict[str, Any] | None:
    """The run's preflight.json, or ``None`` when it is missing or unreadable (the timeout falls back)."""
    path = None if run_dir is None else Path(run_dir) / "preflight.json"
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
