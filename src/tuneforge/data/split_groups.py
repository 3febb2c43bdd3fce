"""``tuneforge data split``: stratified and group-aware splits, and augmented rows kept out of held-out data.

Group-aware: rows sharing a group key (a user id, a conversation id, the document a passage came
from) all land in one split, so a model is never scored on a group it trained on. The split is
made over *groups* with the project's seeded splitter (:func:`tuneforge.data.split.split_records`),
stratified by each group's most common label when asked; proportions are therefore exact in
groups and approximate in rows when groups differ in size.

Augmented and synthetic rows (those with an ``augmented`` field, written by
:mod:`tuneforge.data.augment` and :mod:`tuneforge.data.synthetic`) are grouped with the row they
were made from, and any that would land in validation or test are dropped: a test set holding a
paraphrase of a training row, or a model-written row, no longer measures real data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.readers import Record, read_records
from tuneforge.data.split import split_records
from tuneforge.errors import DataError
from tuneforge.files import write_jsonl_atomic

AUGMENTED = "augmented"


def _own_key(record: Record, group_field: str | None) -> str:
    if group_field is None:
        return f"row:{record.where()}"
    if record.fields.get(group_field) is None:
        raise DataError(f"{record.where()}: missing group field {group_field!r}; give every row a group, "
                        "or split without --group")
    return f"group:{record.fields[group_field]}"


def _source(record: Record) -> str | None:
    marker = record.fields.get(AUGMENTED)
    if not marker:
        return None
    return str(marker.get("source")) if isinstance(marker, dict) and marker.get("source") else "unknown"


@dataclass
class SplitResult:
    splits: dict[str, list[Record]]
    dropped_augmented: list[Record]


def split_grouped(records: list[Record], *, validation: float, test: float, seed: int,
                  stratify_field: str | None = None, group_field: str | None = None) -> SplitResult:
    """Split so that no group spans two splits and no augmented row is held out.

    An augmented row joins the group of its source row (``augmented.source`` is the source's
    ``file:line``); one whose source is not in ``records`` goes to train.
    """
    real = [r for r in records if _source(r) is None]
    key_of = {r.where(): _own_key(r, group_field) for r in real}
    groups: dict[str, list[Record]] = {}
    for r in real:
        groups.setdefault(key_of[r.where()], []).append(r)
    keys = list(groups)
    pseudo = [Record("groups", i, {"key": k}) for i, k in enumerate(keys)]
    label = None
    if stratify_field is not None:
        majority = {k: Counter(str(r.fields.get(stratify_field)) for r in groups[k]).most_common(1)[0][0] for k in keys}
        label = lambda p: majority[p.fields["key"]]  # noqa: E731
    train, val, tst = split_records(pseudo, validation=validation, test=test, seed=seed, stratify_by=label)
    where = {p.fields["key"]: name for name, part in (("train", train), ("validation", val), ("test", tst))
             for p in part}
    out: dict[str, list[Record]] = {"train": [], "validation": [], "test": []}
    dropped = []
    for r in records:
        source = _source(r)
        key = key_of.get(r.where()) if source is None else key_of.get(source)
        name = where.get(key, "train") if key is not None else "train"
        if source is not None and name != "train":
            dropped.append(r)
        else:
            out[name].append(r)
    return SplitResult(out, dropped)


def split_file(source: Path | str, out_dir: Path | str, *, validation: float = 0.1, test: float = 0.1, seed: int = 0,
               stratify_field: str | None = None, group_field: str | None = None) -> dict[str, Any]:
    """Write ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` into ``out_dir``; returns row counts."""
    result = split_grouped(read_records(Path(source)), validation=validation, test=test, seed=seed,
                           stratify_field=stratify_field, group_field=group_field)
    out = Path(out_dir)
    for name, rows in result.splits.items():
        write_jsonl_atomic(out / f"{name}.jsonl", (r.fields for r in rows))
    return {**{k: len(v) for k, v in result.splits.items()}, "dropped_augmented": len(result.dropped_augmented)}
