"""``tuneforge data clean``: apply chosen fixes and write a new file plus a log of every change.

The input is never modified: ``clean_file`` refuses an output path equal to its input, and writes
both outputs atomically. Fixes run in a fixed order, whatever order they are asked in, because
each one prepares the next: text is repaired first (encoding, Unicode, whitespace, personal
data), then rows left empty are dropped, then duplicates are found on the repaired text (two rows
that differ only by mojibake are the same row).

Text fixes apply to every string of a row except its label and chat roles, so chat, alpaca and
preference rows are cleaned the same way as ``text`` rows.

Fixes (``FIXES``):

- ``encoding``: ``ftfy.fix_encoding`` (undoes double encoding such as ``EspaÃ±ol``);
- ``unicode``: NFC normalisation (composed accents, so equal texts compare equal);
- ``whitespace``: runs of whitespace to one space, trimmed (newlines inside chat turns are kept);
- ``pii_redact`` / ``pii_drop``: replace personal data by ``[EMAIL]``, ``[PHONE]`` ... or drop the row;
- ``empty``: drop rows whose text is empty after the fixes above;
- ``duplicates``: drop exact duplicates, keeping the first; when copies carry different labels,
  all copies are dropped (no single label can be trusted) and the log says so;
- ``near_duplicates``: drop MinHash near duplicates, keeping the first of each group.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.extras import require
from tuneforge.data import dedup, pii
from tuneforge.data.audit import string_values
from tuneforge.data.readers import Record, read_records
from tuneforge.errors import ConfigError, UserError
from tuneforge.files import write_jsonl_atomic

ORDER = ("encoding", "unicode", "whitespace", "pii_redact", "pii_drop", "empty", "duplicates", "near_duplicates")
DEFAULT_FIXES = ("encoding", "unicode", "whitespace", "empty", "duplicates")
_SPACES = re.compile(r"[^\S\n]+")
_SKIP_KEYS = ("role",)


def _fix_encoding(text: str) -> str:
    ftfy = require("ftfy", "tuneforge data clean")

    return ftfy.fix_encoding(text)


def _fix_whitespace(text: str) -> str:
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.strip().split("\n"))


TEXT_FIXES: dict[str, Callable[[str], str]] = {
    "encoding": _fix_encoding,
    "unicode": lambda t: unicodedata.normalize("NFC", t),
    "whitespace": _fix_whitespace,
    "pii_redact": lambda t: pii.redact(t, pii.find_pii(t)),
}


@dataclass
class CleanResult:
    output: Path
    log: Path
    rows_in: int
    rows_out: int
    changes: dict[str, int] = field(default_factory=dict)


def _map_strings(value: Any, fn: Callable[[str], str], skip: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: v if k in skip else _map_strings(v, fn, skip) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn, skip) for v in value]
    return value


def _text(fields: dict[str, Any], label_field: str) -> str:
    return "\n".join(string_values({k: v for k, v in fields.items() if k != label_field}))


def clean_records(records: list[Record], fixes: list[str] | tuple[str, ...] = DEFAULT_FIXES, *,
                  label_field: str = "label", near_threshold: float = 0.8) -> tuple[list[Record], list[dict[str, Any]]]:
    """The cleaned records and the change log (one dict per change, in the order made)."""
    unknown = sorted(set(fixes) - set(ORDER))
    if unknown:
        raise ConfigError(f"unknown fix(es) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    log: list[dict[str, Any]] = []
    skip = (*_SKIP_KEYS, label_field)
    rows = list(records)
    for fix in [f for f in ORDER if f in fixes]:
        if fix in TEXT_FIXES:
            rows = [_apply_text_fix(r, fix, skip, label_field, log) for r in rows]
        elif fix == "pii_drop":
            rows = _drop(rows, lambda r: ", ".join(s.kind for s in pii.find_pii(_text(r.fields, label_field))),
                         fix, log, label_field)
        elif fix == "empty":
            rows = _drop(rows, lambda r: "" if _text(r.fields, label_field).strip() else "no text", fix, log,
                         label_field)
        elif fix == "duplicates":
            rows = _drop_exact(rows, label_field, log)
        else:
            rows = _drop_near(rows, label_field, near_threshold, log)
    return rows, log


def _apply_text_fix(rec: Record, fix: str, skip: tuple[str, ...], label_field: str, log: list[dict[str, Any]]) -> Record:
    fields = _map_strings(rec.fields, TEXT_FIXES[fix], skip)
    if fields == rec.fields:
        return rec
    log.append({"where": rec.where(), "fix": fix, "action": "changed", "before": _text(rec.fields, label_field),
                "after": _text(fields, label_field)})
    return Record(rec.source, rec.line, fields)


def _drop(rows: list[Record], reason: Callable[[Record], str], fix: str, log: list[dict[str, Any]],
          label_field: str) -> list[Record]:
    kept = []
    for r in rows:
        why = reason(r)
        if why:
            log.append({"where": r.where(), "fix": fix, "action": "dropped", "reason": why,
                        "before": _text(r.fields, label_field)})
        else:
            kept.append(r)
    return kept


def _drop_exact(rows: list[Record], label_field: str, log: list[dict[str, Any]]) -> list[Record]:
    texts = [_text(r.fields, label_field) for r in rows]
    drop: dict[int, str] = {}
    for g in dedup.exact_groups(texts):
        labels = {str(rows[i].fields.get(label_field)) for i in g.rows}
        first = rows[g.rows[0]].where()
        if len(labels) > 1:
            for i in g.rows:
                drop[i] = f"exact duplicates with conflicting labels ({', '.join(sorted(labels))}): all copies dropped"
        else:
            for i in g.rows[1:]:
                drop[i] = f"exact duplicate of {first} (kept)"
    return _drop_indices(rows, drop, "duplicates", label_field, log)


def _drop_near(rows: list[Record], label_field: str, threshold: float, log: list[dict[str, Any]]) -> list[Record]:
    groups = dedup.near_groups([_text(r.fields, label_field) for r in rows], threshold=threshold)
    drop = {i: f"near duplicate of {rows[g.rows[0]].where()} (kept)" for g in groups for i in g.rows[1:]}
    return _drop_indices(rows, drop, "near_duplicates", label_field, log)


def _drop_indices(rows: list[Record], drop: dict[int, str], fix: str, label_field: str,
                  log: list[dict[str, Any]]) -> list[Record]:
    for i in sorted(drop):
        log.append({"where": rows[i].where(), "fix": fix, "action": "dropped", "reason": drop[i],
                    "before": _text(rows[i].fields, label_field)})
    return [r for i, r in enumerate(rows) if i not in drop]


def clean_file(source: Path | str, output: Path | str, *, fixes: list[str] | tuple[str, ...] = DEFAULT_FIXES,
               log_path: Path | str | None = None, label_field: str = "label",
               near_threshold: float = 0.8) -> CleanResult:
    """Clean ``source`` into ``output`` (JSONL) and write the change log beside it (``OUTPUT.log.jsonl``)."""
    source, output = Path(source), Path(output)
    log_file = Path(log_path) if log_path else output.with_name(output.stem + ".log.jsonl")
    if source.resolve() in (output.resolve(), log_file.resolve()):
        raise UserError(f"refusing to overwrite the input {source}; clean writes a new file (pick another -o)")
    records = read_records(source)
    rows, log = clean_records(records, fixes, label_field=label_field, near_threshold=near_threshold)
    write_jsonl_atomic(output, (r.fields for r in rows))
    write_jsonl_atomic(log_file, log)
    changes: dict[str, int] = {}
    for entry in log:
        key = f"{entry['fix']} {entry['action']}"
        changes[key] = changes.get(key, 0) + 1
    return CleanResult(output, log_file, len(records), len(rows), changes)
