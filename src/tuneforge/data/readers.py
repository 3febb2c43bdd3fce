"""Read a data file into a list of ``Record``s that remember where each row came from.

Every record carries its file and 1-based line so that any later problem (a missing field, an
empty text, an unknown label) can be reported as ``path:line: message``, the way a compiler
reports errors. Readers therefore collect every malformed row and fail once with all of them,
rather than stopping at the first.

Formats are plug-ins in ``READERS``, keyed by file extension without the dot (the registry only
accepts letters, digits, ``-`` and ``_`` in names): ``jsonl``, ``json``, ``csv``, ``tsv``,
``parquet``, ``arrow`` and ``txt``. A third party adds one with ``@READERS.register("ext")``.

What ``Record.line`` means per format:

- JSONL (and ``.json`` holding JSONL): the physical line of the object; blank lines are skipped
  but still counted.
- ``.json`` holding an array: the physical line where the element starts.
- CSV / TSV: the physical line where the row starts (the header is line 1 when the file starts
  with it); a quoted cell may span several lines.
- Parquet and Arrow: the 1-based row number.
"""

from __future__ import annotations

import csv
import io
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import DataError
from tuneforge.registry import Registry


@dataclass(frozen=True)
class Record:
    """One row of a data file: its ``fields`` and where it came from."""

    source: str
    """The file path as given to the reader."""
    line: int
    """1-based position in ``source`` (see the module docstring for what it counts per format)."""
    fields: dict[str, Any]
    """Column or key name -> value, in the file's order."""

    def where(self) -> str:
        """``"path:line"``, the prefix of every problem reported about this record."""
        return f"{self.source}:{self.line}"


READERS: Registry[Callable[[Path], list[Record]]] = Registry("data format")


def read_records(path: Path) -> list[Record]:
    """Read ``path`` with the reader registered for its extension.

    Raises ``DataError`` for a missing file, an unsupported extension, an empty file, or rows that
    do not parse (all of them at once, one ``path:line: message`` each).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")
    ext = path.suffix.lower().lstrip(".")
    if ext not in READERS:
        supported = ", ".join("." + name for name in READERS.names())
        raise DataError(
            f"unsupported data file extension {path.suffix or '(none)'!r} for {path}; "
            f"supported: {supported}"
        )
    return READERS.get(ext)(path)


# --- text helpers -------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """The file decoded as UTF-8, without a leading byte-order mark."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start}); "
            "re-save the file as UTF-8"
        ) from None


def _physical_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line_number, line_without_newline)``, splitting on ``\\n``, ``\\r\\n`` and ``\\r`` only.

    ``str.splitlines`` is not used: it also splits on characters such as U+2028 that JSON allows
    inside strings and that editors do not count as line breaks.
    """
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        yield number, line.rstrip("\r\n")


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


#: deepest nesting of arrays and objects a row may have: real rows have a few levels, and every later
#: step (splitting, caching, templating) may walk a value recursively
MAX_DEPTH = 64
TOO_DEEP = f"JSON nested more than {MAX_DEPTH} levels deep; flatten the row"


def _unusable(raw: str, value: Any) -> str | None:
    """Why a parsed JSON row cannot be used (nested too deeply, or text with a lone surrogate), else ``None``.

    Only rows whose raw text could hold either are walked: a surrogate comes only from a ``\\u``
    escape (UTF-8 bytes never decode to one), and deep nesting needs many brackets.
    """
    if "\\u" not in raw and raw.count("[") + raw.count("{") <= MAX_DEPTH:
        return None
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return TOO_DEEP
        if isinstance(item, str) and _has_surrogate(item):
            where = f"field {path!r}" if path else "the value"
            return (f"{where} holds a lone surrogate (a \\ud800-\\udfff escape that is not a character); "
                    "fix or remove the escape")
        if isinstance(item, dict):
            for key, sub in item.items():
                if _has_surrogate(key):
                    return "a field name holds a lone surrogate; fix or remove the escape"
                stack.append((f"{path}.{key}" if path else key, sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub, depth + 1) for i, sub in enumerate(item))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class MalformedRows(DataError):
    """Rows that do not parse; ``records`` holds the rows that did, so callers can go on checking them."""

    def __init__(self, message: str, problems: list[str], records: list[Record]) -> None:
        super().__init__(message, problems)
        self.records = records


def _raise_problems(path: Path, problems: list[str], records: list[Record]) -> None:
    if problems:
        raise MalformedRows(f"{len(problems)} malformed rows in {path}", problems, records)


def _raise_if_empty(path: Path, records: list[Record]) -> list[Record]:
    if not records:
        raise DataError(f"data file is empty: {path} holds no records")
    return records


# --- JSON lines and JSON arrays ---------------------------------------------------------------


def _parse_jsonl(path: Path, text: str) -> list[Record]:
    source = str(path)
    records: list[Record] = []
    problems: list[str] = []
    for number, line in _physical_lines(text):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{source}:{number}: malformed JSON ({e.msg} at column {e.colno})")
            continue
        except RecursionError:
            problems.append(f"{source}:{number}: {TOO_DEEP}")
            continue
        bad = _unusable(line, value)
        if bad:
            problems.append(f"{source}:{number}: {bad}")
            continue
        if not isinstance(value, dict):
            problems.append(f"{source}:{number}: expected a JSON object, got {_json_type(value)}")
            continue
        records.append(Record(source, number, value))
    _raise_problems(path, problems, records)
    return _raise_if_empty(path, records)


_JSON_WS = re.compile(r"[ \t\n\r]*")


def _parse_json_array(path: Path, text: str) -> list[Record]:
    """Parse a top-level JSON array element by element, to know the line each element starts on."""
    source = str(path)
    newlines = [m.start() for m in re.finditer("\n", text)]
    decoder = json.JSONDecoder()
    records: list[Record] = []
    problems: list[str] = []

    def fail(pos: int, message: str) -> DataError:
        line = bisect_right(newlines, pos - 1) + 1
        column = pos - (newlines[line - 2] if line > 1 else -1)
        return DataError(f"{source}:{line}: malformed JSON ({message} at column {column})")

    pos = _JSON_WS.match(text).end() + 1  # just past "["
    pos = _JSON_WS.match(text, pos).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            start = pos
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{source}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})"
                ) from None
            except RecursionError:
                raise DataError(f"{source}:{bisect_right(newlines, start - 1) + 1}: {TOO_DEEP}") from None
            line = bisect_right(newlines, start - 1) + 1
            bad = _unusable(text[start:pos], value)
            if bad:
                problems.append(f"{source}:{line}: {bad}")
            elif isinstance(value, dict):
                records.append(Record(source, line, value))
            else:
                problems.append(f"{source}:{line}: expected a JSON object, got {_json_type(value)}")
            pos = _JSON_WS.match(text, pos).end()
            if text.startswith(",", pos):
                pos = _JSON_WS.match(text, pos + 1).end()
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise fail(pos, "Expecting ',' or ']' after an array element")
    pos = _JSON_WS.match(text, pos).end()
    if pos != len(text):
        raise fail(pos, "Extra data after the array")
    _raise_problems(path, problems, records)
    return _raise_if_empty(path, records)


@READERS.register("txt")
def read_txt(path: Path) -> list[Record]:
    """Raw text for continued pre-training: every paragraph (blank-line separated) is a ``text`` record."""
    records: list[Record] = []
    start, lines = 0, []
    for number, line in [*_physical_lines(_read_text(path)), (-1, "")]:
        if line.strip():
            start = start or number
            lines.append(line)
        elif lines:
            records.append(Record(str(path), start, {"text": "\n".join(lines)}))
            start, lines = 0, []
    return _raise_if_empty(path, records)


@READERS.register("jsonl")
def read_jsonl(path: Path) -> list[Record]:
    """One JSON object per line; blank lines are skipped."""
    return _parse_jsonl(path, _read_text(path))


@READERS.register("json")
def read_json(path: Path) -> list[Record]:
    """A JSON array of objects, or JSONL content under a ``.json`` name."""
    text = _read_text(path)
    stripped = text.lstrip(" \t\r\n")
    if stripped.startswith("["):
        return _parse_json_array(path, text)
    lines = [line for _, line in _physical_lines(text) if line.strip()]
    if len(lines) > 1:
        # A pretty-printed single object would otherwise fail on every line as bad JSONL.
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            value = None
        if isinstance(value, dict):
            raise DataError(
                f"{path} holds one JSON object spread over {len(lines)} lines; "
                "write a JSON array of objects, or one object per line (JSONL)"
            )
    return _parse_jsonl(path, text)


# --- CSV and TSV --------------------------------------------------------------------------------


@contextmanager
def _csv_field_limit(size: int) -> Iterator[None]:
    """Let one cell be as long as the whole file (the csv default caps cells at 128 KiB)."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, size + 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _parse_delimited(path: Path, delimiter: str) -> list[Record]:
    source = str(path)
    text = _read_text(path)
    records: list[Record] = []
    problems: list[str] = []
    header: list[str] | None = None
    with _csv_field_limit(len(text)):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        while True:
            start = reader.line_num + 1  # rows may span lines: remember where this one starts
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                hint = "; a quoted cell is never closed" if "end of data" in str(e) else ""
                problems.append(f"{source}:{start}: malformed CSV ({e}){hint}")
                break  # the reader cannot resynchronise after a quoting error
            if not row:
                continue  # blank line
            if header is None:
                header = row
                duplicates = sorted({name for name in row if row.count(name) > 1})
                if duplicates:
                    raise DataError(
                        f"{source}:{start}: duplicate column names in the header: "
                        + ", ".join(repr(name) for name in duplicates)
                    )
                continue
            if len(row) != len(header):
                problems.append(
                    f"{source}:{start}: expected {len(header)} cells "
                    f"({', '.join(header)}), got {len(row)}"
                )
                continue
            records.append(Record(source, start, dict(zip(header, row))))
    _raise_problems(path, problems, records)
    if header is not None and not records:
        raise DataError(f"data file has a header but no rows: {path}")
    return _raise_if_empty(path, records)


@READERS.register("csv")
def read_csv(path: Path) -> list[Record]:
    """Comma-separated with a header row; quoted cells may span lines; empty cells are ``""``."""
    return _parse_delimited(path, ",")


@READERS.register("tsv")
def read_tsv(path: Path) -> list[Record]:
    """Tab-separated with a header row, quoted like CSV; empty cells are ``""``."""
    return _parse_delimited(path, "\t")


# --- Parquet ------------------------------------------------------------------------------------


@READERS.register("parquet")
def read_parquet(path: Path) -> list[Record]:
    """Parquet via pyarrow; ``line`` is the 1-based row number; nulls are ``None``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"not a readable Parquet file: {path} ({e})") from None
    source = str(path)
    records = [Record(source, i, row) for i, row in enumerate(table.to_pylist(), start=1)]
    return _raise_if_empty(path, records)


@READERS.register("arrow")
def read_arrow(path: Path) -> list[Record]:
    """An Arrow file, stream (what ``datasets``' ``save_to_disk`` writes) or random-access; ``line`` is the row."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                table = pa.ipc.open_file(source).read_all()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"not a readable Arrow file: {path} ({e})") from None
    records = [Record(str(path), i, row) for i, row in enumerate(table.to_pylist(), start=1)]
    return _raise_if_empty(path, records)
