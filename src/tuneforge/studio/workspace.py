"""The studio's own files, all under ``RUNS/.studio/``: the queue, saved recipes, uploads, job logs, reviews.

Kept inside the runs root so that one folder holds everything the studio knows and a restart
(or a second studio on the same folder) finds the same queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    runs: Path

    @classmethod
    def at(cls, runs: Path | str) -> Workspace:
        root = Path(runs).expanduser().resolve()
        ws = cls(root)
        for folder in (ws.recipes, ws.uploads, ws.logs, ws.reviews):
            folder.mkdir(parents=True, exist_ok=True)
        return ws

    home = property(lambda self: self.runs / ".studio")
    queue_file = property(lambda self: self.home / "queue.json")
    recipes = property(lambda self: self.home / "recipes")
    uploads = property(lambda self: self.home / "uploads")
    logs = property(lambda self: self.home / "logs")
    reviews = property(lambda self: self.home / "reviews")
