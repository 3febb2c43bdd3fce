"""The Python API. The CLI only wraps these functions.

A thin facade: ``train`` runs a recipe end to end (:mod:`tuneforge.run.composed`, over the run
pipeline :mod:`tuneforge.run.pipeline`); ``evaluate`` and ``predict`` reopen a finished run folder
(:mod:`tuneforge.run.pipeline`, :mod:`tuneforge.run.loading`); ``export`` writes a standalone model
(:mod:`tuneforge.deploy.export`). Nothing below the run layer imports this module.
"""

from __future__ import annotations

from tuneforge.deploy.export import export
from tuneforge.models.resolve import MODELS, ModelSpec
from tuneforge.run.composed import train
from tuneforge.run.loading import Loaded, load_run, load_split, load_task
from tuneforge.run.pipeline import RecipeLike, TrainResult, as_recipe, evaluate, predict

__all__ = ["Loaded", "RecipeLike", "TrainResult", "as_recipe", "evaluate", "export", "list_models", "load_run",
           "load_split", "load_task", "predict", "train"]


def list_models() -> list[ModelSpec]:
    """The base models tuneforge knows by name (``tuneforge models``)."""
    return [MODELS.get(n) for n in MODELS.names()]
