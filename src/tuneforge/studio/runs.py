"""What the studio knows about the runs under its root: the catalogue's rows joined with the folders.

The catalogue (``run/catalogue.py``) holds finished runs, wherever they were started from (the
CLI registers every finished run); a run still training, interrupted or failed is only a folder.
The studio lists both, the catalogue's summary where there is one and ``summarise`` of the folder
(the same function the catalogue stores) otherwise, so a CLI run and a studio run look the same.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.run.catalogue import RunEntry, RunRegistry, default_path, summarise
from tuneforge.run.folder import RunDir, owned_kind
from tuneforge.studio.security import inside, run_name


@dataclass
class RunRow:
    """One line of the runs table."""

    name: str
    path: Path
    task: str
    model: str
    method: str
    state: str
    summary: dict[str, Any]
    tags: list[str]
    production: list[str]
    catalogue_id: int | None
    seconds: float | None

    def headline(self) -> list[dict[str, Any]]:
        """Each headline metric: base, tuned and the tuned value's 95% interval (when the report has them)."""
        out = []
        for metric in self.summary.get("headline", []):
            tuned = self.summary.get("tuned", {}).get(metric)
            if not isinstance(tuned, (int, float)):
                continue
            interval = self.summary.get("intervals", {}).get(metric, {})
            out.append({"metric": metric, "base": self.summary.get("base", {}).get(metric), "tuned": tuned,
                        "interval": interval.get("tuned"), "delta": interval.get("delta")})
        return out


def registry() -> RunRegistry | None:
    """The same catalogue the CLI writes to (``$TUNEFORGE_REGISTRY``), or None when it is switched off."""
    return RunRegistry() if default_path() is not None else None


def run_dir(root: Path, name: str) -> Path:
    """The folder of run ``name`` under ``root``; anything else is refused."""
    path = inside(root, root / run_name(name))
    if owned_kind(path) != "run":
        raise UserError(f"no tuneforge run named {name!r} under {root}")
    return path


def _seconds(run: RunDir) -> float | None:
    """Training time as the loop measured it: tokens / (tokens per second) of the last logged step."""
    if not run.metrics.is_file():
        return None
    last: dict[str, Any] | None = None
    with run.metrics.open(encoding="utf-8") as fh:
        for line in fh:
            if '"tokens_per_s"' in line:
                last = json.loads(line)
    if not last or not last.get("tokens_per_s"):
        return None
    return float(last["tokens"]) / float(last["tokens_per_s"])


def _catalogue() -> dict[str, RunEntry]:
    reg = registry()
    if reg is None:
        return {}
    try:
        return {e.path: e for e in reg.list()}
    except sqlite3.Error:
        return {}


def list_runs(root: Path) -> list[RunRow]:
    """Every run folder directly under ``root``, newest first."""
    known = _catalogue()
    rows = []
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and owned_kind(p) == "run"]
    for folder in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
        rows.append(row_for(folder, known.get(str(folder.resolve()))))
    return rows


def row_for(folder: Path, entry: RunEntry | None) -> RunRow:
    run = RunDir(folder)
    try:
        facts = summarise(folder)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        facts = {"task": "?", "model": "?", "method": "?", "state": "damaged", "summary": "{}"}
    state = run.status().get("state", "unknown") if run.status_file.is_file() else "unknown"
    return RunRow(name=folder.name, path=folder, task=facts["task"], model=str(facts["model"]), method=facts["method"],
                  state=state, summary=json.loads(facts["summary"]), tags=entry.tags if entry else [],
                  production=entry.production if entry else [], catalogue_id=entry.id if entry else None,
                  seconds=_seconds(run))


def catalogued(path: Path) -> RunEntry:
    """The run's catalogue entry, adding the folder first when the catalogue does not know it yet."""
    reg = registry()
    if reg is None:
        raise UserError("the run catalogue is switched off ($TUNEFORGE_REGISTRY=off): tags and promotions live there")
    try:
        return reg.get(str(path))
    except UserError:
        return reg.add(path)
