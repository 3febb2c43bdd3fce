"""``tuneforge curve``: fine-tune on growing subsets of the training data, then fit a learning curve.

The training half of the command: each point is a real run of the recipe with ``data.max_train_rows``
set to a fraction of its training split. The fit, the extrapolation and the pages are
:mod:`tuneforge.evaluate.curve`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.evaluate.curve import write_curve
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import Recipe
from tuneforge.run.composed import train
from tuneforge.run.folder import RunDir
from tuneforge.run.loading import build_task
from tuneforge.run.pipeline import as_recipe
from tuneforge.run.splits import parse_splits, read_splits


def learning_curve(recipe_path: Path | str, fractions: list[float], *, metric: str | None = None,
                   output: Path | str | None = None, overrides: list[str] | None = None,
                   echo: Any = print) -> dict[str, Any]:
    """Train the recipe on each fraction of its training split; write curve.json/.md/.png/.html."""
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise UserError(f"--fractions must be numbers in (0, 1], got {fractions}")
    base = as_recipe(recipe_path, overrides)
    out = Path(output) if output else Path(base.output).with_name(Path(base.output).name + "-curve")
    points = []
    n_full: int | None = None
    for fraction in sorted(set(fractions)):
        run_dir = out / f"fraction-{fraction:g}"
        recipe = base.model_copy(deep=True)
        recipe.output = run_dir
        if n_full is None:  # the size of the training split, from a dry run (reads and splits, trains nothing)
            n_full = train_rows(base)
        rows = max(1, round(fraction * n_full))
        assert recipe.data is not None  # a run made of runs has no data section of its own
        recipe.data.max_train_rows = rows
        echo(f"curve: fraction {fraction:g} = {rows} training rows -> {run_dir}")
        if not RunDir(run_dir).is_complete():
            train(recipe, overwrite=True, echo=lambda *_: None)
        report = json.loads(RunDir(run_dir).report_json.read_text(encoding="utf-8"))
        name = metric or report["headline"][0]
        if name not in report["tuned"]:
            raise UserError(f"--metric {name!r} is not in the report; use one of {', '.join(report['headline'])}")
        points.append({"fraction": fraction, "n_train": rows, "score": float(report["tuned"][name]),
                       "ci": report.get("intervals", {}).get(name, {}).get("tuned"),
                       "train_seconds": report.get("training", {}).get("seconds"), "run": str(run_dir)})
        echo(f"curve: {rows} rows -> {name} {points[-1]['score']:.4f}")
    return write_curve(points, metric or report["headline"][0], out, echo)


def train_rows(recipe: Recipe) -> int:
    """How many rows the recipe's training split holds, after reading and splitting (nothing is trained)."""
    resolved = resolve_model(recipe.model, allow_hub=recipe.allow_hub)
    task = build_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    splits = parse_splits(read_splits(recipe, task, []), task, fit=True, problems=[])
    return len(splits.examples["train"])
