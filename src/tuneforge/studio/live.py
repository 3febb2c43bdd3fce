"""A run while it trains, read from its folder: the loss and validation curves and the ETA.

Read from ``metrics.jsonl`` (the loop appends one line per step and per validation) and
``preflight.json`` (the planned number of steps), so a run started from the CLI is followed the
same way as one started here. The browser polls with the number of lines it already has and gets
only the new ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.run.folder import RunDir


def read_log(run: RunDir, after: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The log records from line ``after`` on, and the number of complete lines read so far."""
    if not run.metrics.is_file():
        return [], 0
    records, n = [], 0
    with run.metrics.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # a line still being written: read it next time
            n += 1
            if n > after:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return records, n


def planned_steps(run: RunDir) -> int | None:
    path = run.root / "preflight.json"
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text(encoding="utf-8")).get("steps") or 0) or None
    except (ValueError, TypeError):
        return None


def eta_seconds(last_step: dict[str, Any] | None, total: int | None) -> float | None:
    """Steps left times the measured time per step (tokens per step over the loop's tokens per second)."""
    if not last_step or not total or not last_step.get("tokens_per_s"):
        return None
    step = int(last_step["step"])
    per_step = float(last_step["tokens"]) / step / float(last_step["tokens_per_s"])
    return max(total - step, 0) * per_step


def progress(root: Path, after: int = 0) -> dict[str, Any]:
    """New curve points since line ``after``, with the state, step, planned steps and ETA of the run."""
    run = RunDir(root)
    records, n = read_log(run, after)
    reset = n < after  # a resumed run cuts its log back to the checkpoint it resumed from
    if reset:
        records, n = read_log(run)
    everything = records if after == 0 or reset else read_log(run)[0]
    steps = [r for r in everything if "loss" in r and "event" not in r]
    last = steps[-1] if steps else None
    total = planned_steps(run)
    return {"lines": n, "reset": reset, "state": run.status().get("state", "starting"),
            "loss": [[r["step"], r["loss"]] for r in records if "loss" in r and "event" not in r],
            "validation": [[r["step"], r["val_loss"]] for r in records
                           if r.get("event") == "validation" and "val_loss" in r],
            "step": last["step"] if last else 0, "total": total, "eta_s": eta_seconds(last, total)}


def preflight_lines(root: Path) -> list[str] | None:
    """The preflight as the CLI prints it (``Preflight.lines`` of the saved ``preflight.json``)."""
    from tuneforge.train.preflight import Preflight

    path = Path(root) / "preflight.json"
    if not path.is_file():
        return None
    try:
        return Preflight(**json.loads(path.read_text(encoding="utf-8"))).lines()
    except (ValueError, TypeError, KeyError):
        return None
