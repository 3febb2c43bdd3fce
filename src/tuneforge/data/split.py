"""Deterministic train / validation / test splits, and fingerprints that pin down a run's data.

How ``split_records`` decides:

- Rows are grouped into strata: one stratum for everything, or one per class when ``stratify_by``
  is given. Each stratum is shuffled by its own ``random.Random`` seeded with a string built from
  ``seed`` and the class name. String seeds go through SHA-512, so the split does not depend on
  ``PYTHONHASHSEED``, on the order classes first appear, or on which other classes exist.
- A stratum of ``n`` rows gives ``round(n * validation)`` rows to validation and
  ``round(n * test)`` to test (halves round up), but at least one row to each non-zero split and
  at least one row to train. The counts are therefore within one row of the exact proportion for
  every class, up to fractions so extreme that one row per split cannot honour them.
- A stratum with fewer rows than that needs (1 for train + 1 per non-zero held-out split) goes
  entirely to train: a class seen once cannot be both learnt and evaluated. Without
  ``stratify_by`` this applies to the whole data set, so 2 rows with validation and test both
  non-zero give two empty held-out splits; callers that need a validation set must check.
- Validation takes the first rows of the shuffled stratum and test the next ones, so changing
  only ``test`` leaves the validation set as it was.
- Each split keeps the records in their original order.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from tuneforge.data.readers import Record
from tuneforge.errors import ConfigError, DataError

_TRAIN, _VALIDATION, _TEST = 0, 1, 2


def split_records(
    records: list[Record],
    *,
    validation: float,
    test: float,
    seed: int,
    stratify_by: Callable[[Record], str] | None = None,
) -> tuple[list[Record], list[Record], list[Record]]:
    """Split ``records`` into ``(train, validation, test)``; see the module docstring for the rules.

    >>> rows = [Record("d.jsonl", i, {"x": i}) for i in range(1, 11)]
    >>> train, val, test = split_records(rows, validation=0.2, test=0.1, seed=0)
    >>> len(train), len(val), len(test)
    (7, 2, 1)
    """
    _check_fraction("validation", validation)
    _check_fraction("test", test)
    if validation + test >= 1:
        raise ConfigError(
            f"validation ({validation}) + test ({test}) must be below 1 to leave rows for training"
        )

    strata: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        key = stratify_by(record) if stratify_by is not None else ""
        strata.setdefault(key, []).append(index)

    assignment = [_TRAIN] * len(records)
    for key, indices in strata.items():
        n_validation, n_test = _held_out_counts(len(indices), validation, test)
        shuffled = list(indices)
        random.Random(f"tuneforge.split:{seed}:{key}").shuffle(shuffled)
        for index in shuffled[:n_validation]:
            assignment[index] = _VALIDATION
        for index in shuffled[n_validation : n_validation + n_test]:
            assignment[index] = _TEST

    splits: tuple[list[Record], list[Record], list[Record]] = ([], [], [])
    for record, which in zip(records, assignment):
        splits[which].append(record)
    return splits


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:  # also refuses NaN
        raise ConfigError(f"{name} fraction must be in [0, 1), got {value}")


def _held_out_counts(n: int, validation: float, test: float) -> tuple[int, int]:
    """How many of a stratum's ``n`` rows go to validation and to test."""
    wanted = [f for f in (validation, test) if f > 0]
    if n < 1 + len(wanted):
        return 0, 0  # too few rows to train on and evaluate: all of them go to train
    exact = [n * validation, n * test]
    counts = [max(1, math.floor(x + 0.5)) if x > 0 else 0 for x in exact]
    while counts[0] + counts[1] > n - 1:
        # Rounding up left train empty: take back from the split that was rounded up the most
        # (from test on a tie, since validation is the one watched during training).
        reducible = [i for i in (0, 1) if counts[i] > 1]
        worst = max(reducible, key=lambda i: (counts[i] - exact[i], i))
        counts[worst] -= 1
    return counts[0], counts[1]


def fingerprint_file(path: Path) -> str:
    """SHA-256 (hex) of the file's bytes, read in 1 MiB chunks so big files do not fill memory."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    return digest.hexdigest()


def fingerprint_records(records: Iterable[Record]) -> str:
    """SHA-256 (hex) of the records' fields as canonical JSON, one line per record.

    Keys are sorted, so the order of columns does not matter; the order of records does. Where a
    record came from (``source``, ``line``) is not part of it: the same rows read from a moved
    file give the same fingerprint. Values JSON cannot hold (dates, bytes from Parquet) are
    hashed through ``str``.
    """
    digest = hashlib.sha256()
    for record in records:
        line = json.dumps(
            record.fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
        )
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
