"""The run catalogue: a local SQLite database of finished runs, their tags, and which one is in production.

Not to be confused with :mod:`tuneforge.registry`, the plug-in registry. Why SQLite (the standard
library's ``sqlite3``): one file, no server, safe under concurrent writers (each change is one
transaction), and readable with any SQLite tool. The database holds a summary of each run
(task, model, method, headline metrics with intervals, the test split's fingerprint) so that
``tuneforge runs list`` and ``compare`` need not open every folder; the run folder stays the truth.

Promotion keeps history: ``promote`` adds a row naming the run now in production for a name
(for example ``intent-classifier``) and the run it replaced; nothing is ever overwritten.

Where: ``$TUNEFORGE_REGISTRY`` if set (``off`` disables automatic registration at the end of a
run), else ``~/.local/share/tuneforge/runs.sqlite``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import UserError
from tuneforge.run.folder import RunDir

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    compression TEXT,
    state TEXT NOT NULL,
    test_sha256 TEXT,
    n_test INTEGER,
    summary TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
);
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    replaced_run_id INTEGER REFERENCES runs(id),
    promoted_at TEXT NOT NULL,
    note TEXT
);
"""


def default_path() -> Path | None:
    """``$TUNEFORGE_REGISTRY`` (``None`` when it is ``off``), else ``~/.local/share/tuneforge/runs.sqlite``."""
    env = os.environ.get("TUNEFORGE_REGISTRY")
    if env is not None and env.strip().lower() in ("off", "none", "0", ""):
        return None
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "tuneforge" / "runs.sqlite"


@dataclass
class RunEntry:
    id: int
    path: str
    name: str
    task: str
    model: str
    method: str
    compression: str | None
    state: str
    test_sha256: str | None
    n_test: int | None
    summary: dict[str, Any]
    registered_at: str
    tags: list[str]
    production: list[str]

    def headline(self) -> dict[str, float]:
        return {m: self.summary["tuned"][m] for m in self.summary.get("headline", [])
                if isinstance(self.summary.get("tuned", {}).get(m), (int, float))}


def summarise(run_dir: Path | str) -> dict[str, Any]:
    """What the catalogue stores about a run folder (raises ``UserError`` if it is not a finished run)."""
    run = RunDir(run_dir)
    if not run.recipe.is_file() or not run.status_file.is_file():
        raise UserError(f"{run.root} is not a tuneforge run folder (no recipe.yaml or status.json)")
    recipe = yaml.safe_load(run.recipe.read_text(encoding="utf-8"))
    report = json.loads(run.report_json.read_text(encoding="utf-8")) if run.report_json.is_file() else {}
    fps = run.data / "fingerprints.json"
    test = json.loads(fps.read_text(encoding="utf-8"))["splits"].get("test", {}) if fps.is_file() else {}
    compression = run.root / "compression.json"
    summary = {k: report[k] for k in ("headline", "tuned", "base", "delta", "intervals", "base_is") if k in report}
    summary["tuned"] = {k: v for k, v in summary.get("tuned", {}).items() if isinstance(v, (int, float))}
    summary["base"] = {k: v for k, v in summary.get("base", {}).items() if isinstance(v, (int, float))}
    if compression.is_file():
        facts = json.loads(compression.read_text(encoding="utf-8"))
        summary["compression"] = {k: facts[k] for k in ("config", "size_bytes", "ms_per_item", "source_run")}
    return {"path": str(run.root.resolve()), "name": run.root.resolve().name, "task": recipe["task"],
            "model": recipe["model"], "method": recipe["method"]["name"],
            "compression": summary.get("compression", {}).get("config", {}).get("method"),
            "state": run.status().get("state", "unknown"), "test_sha256": test.get("sha256"),
            "n_test": test.get("rows"), "summary": json.dumps(summary)}


class RunRegistry:
    """The catalogue in one SQLite file; every public method is one transaction."""

    def __init__(self, path: Path | str | None = None) -> None:
        chosen = Path(path) if path is not None else default_path()
        if chosen is None:
            raise UserError("the run registry is switched off ($TUNEFORGE_REGISTRY=off); set it to a file path")
        self.path = chosen
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        try:
            with db:  # commits, or rolls back on an exception
                yield db
        finally:
            db.close()

    # -- writing ------------------------------------------------------------------------
    def add(self, run_dir: Path | str) -> RunEntry:
        """Register (or refresh) a run folder; its resolved path is its identity."""
        row = summarise(run_dir)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (path, name, task, model, method, compression, state, test_sha256, n_test, summary,"
                " registered_at) VALUES (:path, :name, :task, :model, :method, :compression, :state, :test_sha256,"
                " :n_test, :summary, :now) ON CONFLICT(path) DO UPDATE SET name=excluded.name, task=excluded.task,"
                " model=excluded.model, method=excluded.method, compression=excluded.compression,"
                " state=excluded.state, test_sha256=excluded.test_sha256, n_test=excluded.n_test,"
                " summary=excluded.summary", {**row, "now": now})
        return self.get(row["path"])

    def tag(self, ref: str, tags: list[str], *, remove: bool = False) -> RunEntry:
        entry = self.get(ref)
        with self._db() as db:
            for t in tags:
                if not t.strip():
                    raise UserError("a tag cannot be empty")
                if remove:
                    db.execute("DELETE FROM tags WHERE run_id = ? AND tag = ?", (entry.id, t))
                else:
                    db.execute("INSERT OR IGNORE INTO tags (run_id, tag) VALUES (?, ?)", (entry.id, t))
        return self.get(str(entry.id))

    def promote(self, ref: str, name: str, note: str | None = None) -> dict[str, Any]:
        """Make ``ref`` the production run for ``name``; returns the promotion with what it replaced."""
        entry = self.get(ref)
        if entry.state != "complete":
            raise UserError(f"run {entry.id} ({entry.path}) is '{entry.state}', not complete; only finished runs "
                            "can be promoted")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._db() as db:
            current = db.execute("SELECT run_id FROM promotions WHERE name = ? ORDER BY id DESC LIMIT 1",
                                 (name,)).fetchone()
            replaced = current["run_id"] if current else None
            if replaced == entry.id:
                raise UserError(f"run {entry.id} is already in production for {name!r}")
            db.execute("INSERT INTO promotions (name, run_id, replaced_run_id, promoted_at, note) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (name, entry.id, replaced, now, note))
        return {"name": name, "run": entry.id, "replaced": replaced, "promoted_at": now, "note": note}

    # -- reading ------------------------------------------------------------------------
    def get(self, ref: str) -> RunEntry:
        """A run by id, by path, or by folder name (when only one run has that name)."""
        with self._db() as db:
            if ref.isdigit():
                rows = db.execute("SELECT * FROM runs WHERE id = ?", (int(ref),)).fetchall()
            else:
                rows = db.execute("SELECT * FROM runs WHERE path = ?", (str(Path(ref).resolve()),)).fetchall() \
                    or db.execute("SELECT * FROM runs WHERE name = ?", (ref,)).fetchall()
            if not rows:
                raise UserError(f"no run {ref!r} in the registry {self.path}; see `tuneforge runs list`, or add it "
                                "with `tuneforge runs add RUN_DIR`")
            if len(rows) > 1:
                ids = ", ".join(str(r["id"]) for r in rows)
                raise UserError(f"{ref!r} names several runs (ids {ids}); use an id or the full path")
            return self._entry(db, rows[0])

    def list(self, *, tag: str | None = None, task: str | None = None) -> list[RunEntry]:
        query, args = "SELECT * FROM runs", []
        where = []
        if tag is not None:
            where.append("id IN (SELECT run_id FROM tags WHERE tag = ?)")
            args.append(tag)
        if task is not None:
            where.append("task = ?")
            args.append(task)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._db() as db:
            return [self._entry(db, r) for r in db.execute(query + " ORDER BY id", args).fetchall()]

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every promotion for ``name``, oldest first; the last one is in production."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM promotions WHERE name = ? ORDER BY id", (name,)).fetchall()
        return [dict(r) for r in rows]

    def production(self, name: str) -> RunEntry | None:
        hist = self.history(name)
        return self.get(str(hist[-1]["run_id"])) if hist else None

    def compare(self, refs: list[str]) -> dict[str, Any]:
        """Headline metrics of several runs side by side, and whether they were scored on the same test split."""
        if len(refs) < 2:
            raise UserError("compare needs at least two runs")
        entries = [self.get(r) for r in refs]
        metrics: list[str] = []
        for e in entries:
            metrics += [m for m in e.summary.get("headline", []) if m not in metrics]
        same = len({e.test_sha256 for e in entries}) == 1 and entries[0].test_sha256 is not None
        return {"runs": entries, "metrics": metrics, "same_test_split": same}

    def _entry(self, db: sqlite3.Connection, row: sqlite3.Row) -> RunEntry:
        tags = [r["tag"] for r in db.execute("SELECT tag FROM tags WHERE run_id = ? ORDER BY tag", (row["id"],))]
        prod = [r["name"] for r in db.execute(
            "SELECT p.name FROM promotions p WHERE p.id = (SELECT MAX(id) FROM promotions q WHERE q.name = p.name) "
            "AND p.run_id = ? ORDER BY p.name", (row["id"],))]
        data = {k: row[k] for k in row.keys()}
        data["summary"] = json.loads(data["summary"])
        return RunEntry(**data, tags=tags, production=prod)


def register_finished_run(run_dir: Path | str) -> RunEntry | None:
    """Called at the end of every run: add it to the default catalogue.

    A catalogue that cannot be written (read-only home, locked file) must not fail a run that has
    already finished: the error is logged with the command that registers the run later.
    """
    if default_path() is None:
        return None
    try:
        return RunRegistry().add(run_dir)
    except (sqlite3.Error, OSError) as err:
        log.warning("could not register %s in the run registry (%s); later: `tuneforge runs add %s`",
                    run_dir, err, run_dir)
        return None
