"""Errors a user can act on. The CLI turns each into a message on stderr and an exit code.

Everything a user can fix (recipe, data, paths, memory) is a ``UserError`` and exits with 2;
a run that fails while training (NaN loss) exits with 3. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class TuneforgeError(Exception):
    """Base class of every error tuneforge raises on purpose."""

    exit_code = 1


class UserError(TuneforgeError):
    """Bad input: the message says what is wrong, where, and what to do."""

    exit_code = 2


class ConfigError(UserError):
    """A recipe that does not validate (unknown key, wrong type, missing file)."""


class DataError(UserError):
    """Data that does not validate; ``problems`` holds one ``file:line: message`` per bad row."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        lines = [message, *("  " + p for p in shown)]
        if more > 0:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


class ResourceError(UserError):
    """The run would not fit (memory) or asks for hardware that is not there."""


class TrainingError(TuneforgeError):
    """Training went wrong in a way the user must look at (for example a NaN loss)."""

    exit_code = 3
