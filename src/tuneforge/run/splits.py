"""From the recipe's data section to validated train/validation/test examples.

Each split may be a file, a folder or glob of files, a ``datasets`` folder or a hub dataset name
(``tuneforge.data.sources``). Splits given for validation or test are used as they are; what is missing
is carved out of ``train`` deterministically (stratified by label for classification), and
``split_sources`` says which, so the preflight never carves silently. Every file is parsed in
full before anything trains, so all bad rows are reported in one go. The splits actually used are
saved into the run folder, so ``eval`` and the report always see the same test items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.readers import MalformedRows, Record
from tuneforge.data.sources import locate, read_source
from tuneforge.errors import DataError
from tuneforge.data.split import fingerprint_file, fingerprint_records, split_records
from tuneforge.recipe import Recipe
from tuneforge.files import write_jsonl_atomic
from tuneforge.tasks.base import Example, Task

SPLITS = ("train", "validation", "test")


@dataclass
class Splits:
    records: dict[str, list[Record]]
    examples: dict[str, list[Example]]

    def fingerprints(self, recipe: Recipe) -> dict[str, Any]:
        files = {k: locate(p, k, allow_hub=recipe.allow_hub).files for k in SPLITS
                 if (p := getattr(recipe.data, k)) is not None}
        return {
            "files": {name: _file_prints(paths) for name, paths in files.items()},
            "splits": {k: {"rows": len(v), "sha256": fingerprint_records(v)} for k, v in self.records.items()},
        }


def _file_prints(paths: tuple[Path, ...]) -> dict[str, Any] | list[dict[str, Any]]:
    """One ``{path, sha256}`` for a single file (the layout runs have always had), a list for several."""
    prints = [{"path": str(p), "sha256": fingerprint_file(p)} for p in paths]
    return prints[0] if len(prints) == 1 else prints


def split_sources(recipe: Recipe) -> dict[str, str]:
    """Where each split's rows come from, in words: the files read, or the share carved out of train."""
    data = recipe.data
    sources = {k: locate(p, k, allow_hub=recipe.allow_hub).describe() for k in SPLITS
               if (p := getattr(data, k)) is not None}
    how = f"seed {data.split.seed}" + (", stratified" if data.split.stratify else "")
    for name, share in (("validation", data.split.validation), ("test", data.split.test)):
        if name not in sources:
            sources[name] = (f"{share:.0%} carved from train (data.split.{name}, {how})" if share
                             else f"none (no data.{name}, data.split.{name} is 0)")
    if data.max_train_rows:
        sources["train"] += f", first {data.max_train_rows:,} rows (data.max_train_rows)"
    if data.max_test_rows:
        sources["test"] += f", first {data.max_test_rows:,} rows (data.max_test_rows)"
    return sources


def read_splits(recipe: Recipe, task: Task, problems: list[str]) -> dict[str, list[Record]]:
    """The records of each split; rows that do not parse go to ``problems`` and the rest are kept."""
    data = recipe.data
    train = _read(data.train, "train", recipe.allow_hub, problems)
    given = {k: _read(p, k, recipe.allow_hub, problems) for k in ("validation", "test")
             if (p := getattr(data, k)) is not None}
    val_share = 0.0 if "validation" in given else data.split.validation
    test_share = 0.0 if "test" in given else data.split.test
    if val_share or test_share:
        stratify = task.stratify_key() if data.split.stratify else None
        train, val, test = split_records(train, validation=val_share, test=test_share, seed=data.split.seed,
                                         stratify_by=stratify)
        given.setdefault("validation", val)
        given.setdefault("test", test)
    return {"train": train[: data.max_train_rows], "validation": given.get("validation", []),
            "test": given.get("test", [])[: data.max_test_rows]}


def _read(path: Path, split: str, allow_hub: bool, problems: list[str]) -> list[Record]:
    try:
        return read_source(path, split, allow_hub=allow_hub)
    except MalformedRows as err:
        problems.extend(err.problems)
        return err.records


def parse_splits(records: dict[str, list[Record]], task: Task, *, fit: bool, problems: list[str] | None = None) -> Splits:
    """Validate every split; with ``fit`` the task learns its schema (labels, fields) from train.

    ``problems`` (rows that did not parse) are reported together with the rows that fail the task's checks.
    """
    examples: dict[str, list[Example]] = {}
    problems = list(problems or [])
    for name, recs in records.items():  # every split is checked before failing, so one run lists all bad rows
        try:
            examples[name] = task.parse(recs, f"the {name} data")
        except DataError as err:
            problems.extend(err.problems or [str(err)])
    if problems:
        raise DataError(f"{len(problems)} bad row(s) in the data; fix them and re-run (nothing was trained)",
                        sorted(problems, key=_file_line))
    if fit:
        task.fit_schema(examples["train"])
    for k in records:
        task.check_against_schema(examples[k], f"the {k} data")
    return Splits(records=records, examples=examples)


def _file_line(problem: str) -> tuple[str, int]:
    path, _, rest = problem.partition(":")
    line = rest.partition(":")[0]
    return path, int(line) if line.isdigit() else 0


def save_splits(splits: Splits, folder: Path) -> None:
    for name, recs in splits.records.items():
        write_jsonl_atomic(folder / f"{name}.jsonl",
                           ({"source": r.source, "line": r.line, "fields": r.fields} for r in recs))


def load_saved_split(folder: Path, name: str) -> list[Record]:
    path = folder / f"{name}.jsonl"
    # split on "\n" only: str.splitlines() would also break inside texts holding U+2028 or U+0085
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return [Record(source=r["source"], line=r["line"], fields=r["fields"]) for r in rows]
