"""Built-in tasks; importing this package registers them in ``TASKS``."""

from tuneforge.tasks import classification, extraction, generation, language_modeling  # noqa: F401
from tuneforge.tasks.base import TASKS, Example, Task, get_task

__all__ = ["TASKS", "Example", "Task", "get_task"]
