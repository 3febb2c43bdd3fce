"""The loop's state: what a checkpoint saves (``state.json``) so that a run continues exactly.

Its own module so that the checkpoint code and the loop both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    """Everything needed to continue a run exactly; saved in each checkpoint's state.json."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    tokens: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What a report says about the training: steps, time, tokens and the best validation."""
        return {"steps": self.step, "seconds": self.seconds, "tokens": self.tokens, "best_step": self.best_step,
                "best_val": self.best_metric, "stopped_early": self.stopped_early}
