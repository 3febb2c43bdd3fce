"""Built-in tasks; importing this package registers them in ``TASKS``."""

from tuneforge.tasks import (  # noqa: F401
    classification, extraction, generation, language_modeling, preference, reward_model, rl,
)
from tuneforge.tasks.base import TASKS, Example, Task, get_task

__all__ = ["TASKS", "Example", "Task", "get_task"]
