"""Two or more runs on the same test items: headline metrics, paired intervals, the items where they disagree.

The per-item scores come from each run's task (``item_scores`` of its saved tuned predictions on its
saved test split), the paired interval from ``metrics_extra.paired_bootstrap``: the same items
resampled for both runs. Runs whose test splits differ (``data/fingerprints.json``) are refused,
since a difference between them would mix the models with the items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from tuneforge import api
from tuneforge.errors import UserError
from tuneforge.evaluate.metrics_extra import paired_bootstrap
from tuneforge.run.folder import RunDir
from tuneforge.studio.context import studio
from tuneforge.studio.runs import list_runs, run_dir
from tuneforge.tasks.base import Example, Task

NAV = ("/compare", "Compare")
router = APIRouter()
MAX_SHOWN = 50


@dataclass
class Scored:
    """One run's tuned answers and per-item scores on its saved test split."""

    name: str
    task: Task
    test: list[Example]
    answers: list[Any]
    items: dict[str, list[float]]


def test_fingerprint(folder: Path) -> dict[str, Any]:
    path = RunDir(folder).data / "fingerprints.json"
    if not path.is_file():
        raise UserError(f"{folder.name} has no data/fingerprints.json: it cannot be paired with another run")
    return json.loads(path.read_text(encoding="utf-8"))["splits"].get("test", {})


def scored(folder: Path) -> Scored:
    run = RunDir(folder)
    path = run.predictions / "tuned.jsonl"
    if not path.is_file():
        raise UserError(f"{folder.name} has no tuned predictions (predictions/tuned.jsonl): it has not finished")
    _, task, _ = api.load_task(folder)
    test = api.load_split(folder, task, "test")
    predictions = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Scored(folder.name, task, test, [task.answer_text(p) for p in predictions],
                  task.item_scores(test, predictions))


def compare_runs(folders: list[Path]) -> dict[str, Any]:
    """Paired differences of every run against the first, per per-item metric, and the disagreeing items."""
    if len(folders) < 2:
        raise UserError("pick at least two runs to compare")
    prints = [test_fingerprint(f) for f in folders]
    if any(p != prints[0] for p in prints[1:]):
        raise UserError("these runs were not tested on the same items (data/fingerprints.json differs); "
                        "only runs with the same test split can be compared item by item")
    runs = [scored(f) for f in folders]
    ref = runs[0]
    pairs = []
    for other in runs[1:]:
        for metric in sorted(set(ref.items) & set(other.items)):
            result = paired_bootstrap(ref.items[metric], other.items[metric])
            pairs.append({"a": ref.name, "b": other.name, "metric": metric,
                          "a_mean": sum(ref.items[metric]) / max(len(ref.items[metric]), 1),
                          "b_mean": sum(other.items[metric]) / max(len(other.items[metric]), 1), **result,
                          "significant": result["ci_low"] > 0 or result["ci_high"] < 0})
    differ = [i for i in range(len(ref.test)) if len({json.dumps(r.answers[i], sort_keys=True) for r in runs}) > 1]
    shown = [{"where": ref.test[i].where, "input": ref.test[i].text, "reference": ref.test[i].target,
              "answers": [r.answers[i] for r in runs]} for i in differ[:MAX_SHOWN]]
    return {"names": [r.name for r in runs], "pairs": pairs, "n_items": len(ref.test),
            "n_disagree": len(differ), "items": shown}


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, run: Annotated[list[str] | None, Query()] = None) -> HTMLResponse:
    st = studio(request)
    run = run or []
    done = [r for r in list_runs(st.root) if r.state == "complete"]
    result = compare_runs([run_dir(st.root, n) for n in run]) if run else None
    return st.page(request, "compare.html", runs=done, chosen=run, result=result)
