"""A finished reward-model run as a judge: it scores (prompt, answer) pairs for win rates and RL rewards.

The judge should not have seen the data the judged run trained on (train it on a disjoint split), or
the win rate measures memorisation rather than preference. The run is opened by the run layer
(``tuneforge.run.loading.open_judge``) and handed to the task that asks for it, so this module holds
only the scoring.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from tuneforge.errors import ConfigError
from tuneforge.tasks.base import Task
from tuneforge.tasks.reward_model import RewardModel

Messages = list[dict[str, str]]


class Judge:
    """A reward model and its task; ``score`` gives one reward per (prompt messages, answer)."""

    def __init__(self, task: Task, model: nn.Module, source: Path | str) -> None:
        if not isinstance(task, RewardModel):
            raise ConfigError(f"{source} is a {task.name} run; a judge or reward must be a reward_model run")
        self.task: RewardModel = task
        self.model = model

    def score(self, prompts: list[Messages], answers: list[str]) -> list[float]:
        return self.task.score_answers(self.model, list(zip(prompts, answers)))
