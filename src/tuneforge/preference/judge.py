"""A finished reward-model run as a judge: it scores (prompt, answer) pairs for win rates and RL rewards.

The judge should not have seen the data the judged run trained on (train it on a disjoint split), or
the win rate measures memorisation rather than preference.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import ConfigError

Messages = list[dict[str, str]]


class Judge:
    """Loads the run's model once; ``score`` gives one reward per (prompt messages, answer)."""

    def __init__(self, run_dir: Path | str) -> None:
        from tuneforge.api import load_run
        from tuneforge.tasks.reward_model import RewardModel

        loaded = load_run(run_dir)
        if not isinstance(loaded.task, RewardModel):
            raise ConfigError(f"{run_dir} is a {loaded.task.name} run; a judge or reward must be a reward_model run")
        self.task: RewardModel = loaded.task
        self.model = loaded.model

    def score(self, prompts: list[Messages], answers: list[str]) -> list[float]:
        return self.task.score_answers(self.model, list(zip(prompts, answers)))
