"""Train any recipe: one run, a chain of stages, or a multi-task mixture.

The one entry point above the single-run pipeline (:mod:`tuneforge.run.pipeline`), the staged chain
(:mod:`tuneforge.run.stages`) and the mixture (:mod:`tuneforge.run.multitask`): it sits above all three so
that none of them needs to import the others to dispatch. ``tuneforge.api.train`` is this function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.recipe import Recipe, composed_recipe
from tuneforge.run import pipeline
from tuneforge.run.folder import RunDir
from tuneforge.run.multitask import run_multitask
from tuneforge.run.pipeline import RecipeLike, TrainResult, as_recipe
from tuneforge.run.stages import run_stages
from tuneforge.train.loop import ValidationHook


def train(recipe: RecipeLike, *, resume: bool = False, dry_run: bool = False, overwrite: bool = False,
          overrides: list[str] | None = None, echo: Any = print,
          on_validation: ValidationHook | None = None) -> TrainResult:
    """Fine-tune as the recipe says and write the run folder; ``dry_run`` stops after the preflight.

    ``on_validation`` is passed to the training loop (see ``ValidationHook``): a sweep prunes through it.
    """
    recipe = as_recipe(recipe, overrides)
    if recipe.stages is None and recipe.tasks is None:
        return pipeline.train(recipe, resume=resume, dry_run=dry_run, overwrite=overwrite, echo=echo,
                              on_validation=on_validation)
    return train_composed(recipe, resume=resume, dry_run=dry_run, overwrite=overwrite, echo=echo)


def train_composed(recipe: Recipe, *, resume: bool, dry_run: bool, overwrite: bool, echo: Any) -> TrainResult:
    """Staged chains and multi-task mixtures; a dry run checks every part."""
    if dry_run:
        raw = recipe.model_dump(mode="json")
        parts = [composed_recipe(raw, i) for i in range(len(recipe.stages or recipe.tasks or []))]
        last = None
        for part in parts:
            echo(f"== {part.output}")
            last = pipeline.train(part, dry_run=True, echo=echo)
        assert last is not None
        return TrainResult(Path(recipe.output), None, last.preflight)
    runner = run_stages if recipe.stages is not None else run_multitask
    runner(recipe, resume=resume, overwrite=overwrite, echo=echo)
    report = json.loads(RunDir(recipe.output).report_json.read_text(encoding="utf-8"))
    return TrainResult(Path(recipe.output), report, None)


def finished_run(run_or_recipe: Path | str, echo: Any = print) -> Path:
    """A finished run folder; a recipe is trained first unless its ``output`` already holds a finished run."""
    path = Path(run_or_recipe)
    if path.is_dir():
        return path
    if not path.is_file():
        raise UserError(f"{path} is neither a run folder nor a recipe file")
    recipe = as_recipe(path)
    if not RunDir(recipe.output).is_complete():
        echo(f"{recipe.output} holds no finished run: training {path} first")
        train(recipe, echo=echo)
    return Path(recipe.output)
