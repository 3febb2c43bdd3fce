"""Collect every bad row of a data set, then fail once with all of them.

A task checks each record with the ``require_*`` helpers, which report into a ``Problems`` and
return ``None`` for a bad value so the task can skip the row and go on. After the loop,
``problems.raise_if_any("train data")`` stops the run before anything is trained, listing each
problem as ``path:line: message``:

>>> from tuneforge.data.readers import Record
>>> problems = Problems()
>>> require_text(Record("train.jsonl", 3, {"label": "a"}), "text", problems) is None
True
>>> problems.messages()
["train.jsonl:3: missing field 'text' (fields present: label)"]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tuneforge.data.readers import Record
from tuneforge.errors import DataError


class Problems:
    """An ordered list of ``path:line: message`` strings about the rows of one data set."""

    def __init__(self) -> None:
        self._messages: list[str] = []
        self._rows: set[tuple[str, int]] = set()

    def add(self, record: Record, message: str) -> None:
        """Note that ``record`` is bad because of ``message`` (one row may have several)."""
        self._messages.append(f"{record.where()}: {message}")
        self._rows.add((record.source, record.line))

    def messages(self) -> list[str]:
        """Every problem so far, in the order it was added."""
        return list(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[str]:
        return iter(self.messages())

    def raise_if_any(self, what: str) -> None:
        """Raise one ``DataError`` listing every problem, if there is any.

        The count in the message is of distinct rows, not of problems.
        """
        if self._messages:
            n = len(self._rows)
            raise DataError(
                f"{n} bad row(s) in {what}; fix them and re-run (nothing was trained)",
                problems=self.messages(),
            )


def require_field(record: Record, field: str, problems: Problems) -> Any | None:
    """The value of ``field``, or ``None`` after reporting it missing or null.

    An empty string counts as present: whether it is acceptable depends on the field.
    """
    if field not in record.fields:
        problems.add(record, _missing(record, field))
        return None
    value = record.fields[field]
    if value is None:
        problems.add(record, f"field {field!r} is null")
    return value


def require_text(record: Record, field: str, problems: Problems) -> str | None:
    """The string in ``field``, or ``None`` after reporting it missing, not a string, or blank."""
    if field not in record.fields:
        problems.add(record, _missing(record, field))
        return None
    value = record.fields[field]
    if not isinstance(value, str):
        got = "null" if value is None else type(value).__name__
        problems.add(record, f"field {field!r} must be a string, got {got}")
        return None
    if not value.strip():
        problems.add(record, f"empty text in field {field!r}")
        return None
    return value


def _missing(record: Record, field: str) -> str:
    present = ", ".join(record.fields) or "none"
    return f"missing field {field!r} (fields present: {present})"
