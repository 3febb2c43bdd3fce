"""Where a split's rows come from: a file, a folder or glob of files, a ``datasets`` folder, or a hub dataset name.

Practitioners arrive with data in the shapes their tools write: one JSONL file, a folder of shards
(``data/train-00000-of-00003.parquet``), a folder written by ``datasets``' ``save_to_disk``, or a dataset
they already downloaded with ``load_dataset`` (it lives in the local Hugging Face hub cache). ``read_source``
reads each of them into ``Record``s that still name their file and row, without the ``datasets`` package:
``save_to_disk`` folders are Arrow stream files listed in ``state.json``, read with pyarrow.

A folder holding files for several splits is read the way ``datasets`` reads a data folder: a file whose
name holds ``train`` / ``validation`` (or ``valid``, ``dev``, ``val``) / ``test`` belongs to that split, and
``data.train: folder`` takes only the training files. A hub dataset name is looked up in the local cache
first; a download happens only when the recipe sets ``allow_hub: true``.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.readers import READERS, MalformedRows, Record, read_records
from tuneforge.errors import DataError

#: the names ``datasets`` accepts for each split in a data file's name (its ``_split_patterns``' keywords)
SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
               "test": ("test", "testing", "eval", "evaluation")}
GLOB_CHARS = re.compile(r"[*?\[]")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """The files a split is read from and how they were found (for the preflight and the run's fingerprints)."""

    spec: str
    kind: str
    """``file``, ``glob``, ``folder``, ``save_to_disk`` or ``hub cache``."""
    files: tuple[Path, ...]

    def describe(self) -> str:
        shown = str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} files"
        return shown if self.kind == "file" else f"{self.spec} ({self.kind}: {shown})"


def is_dataset_name(spec: str) -> bool:
    """``owner/name`` or ``name`` with no file extension a reader knows: a hub dataset, not a path."""
    suffix = Path(spec).suffix.lower().lstrip(".")
    return bool(DATASET_NAME.match(spec)) and suffix not in READERS and not spec.startswith(".")


def locate(spec: str | Path, split: str, *, allow_hub: bool = False) -> Source:
    """The files of ``split`` that ``spec`` names; raises ``DataError`` saying what was looked at."""
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return Source(text, "file", (path,))
    if path.is_dir():
        return _folder(text, path, split)
    if GLOB_CHARS.search(text):
        matches = tuple(Path(p) for p in sorted(glob.glob(text, recursive=True)) if _readable(Path(p)))
        if not matches:
            raise DataError(f"data.{split}: the pattern {text} matches no data file "
                            f"(readable: {', '.join('.' + n for n in READERS.names())})")
        return Source(text, "glob", matches)
    if is_dataset_name(text):
        return _hub_dataset(text, split, allow_hub)
    raise DataError(f"data.{split}: not found: {text}")


def read_source(spec: str | Path, split: str, *, allow_hub: bool = False) -> list[Record]:
    """Every record of ``split`` from ``spec``, in file order (see ``locate`` for what ``spec`` may be).

    Bad rows of every file are collected into one ``MalformedRows``, as for a single file.
    """
    records: list[Record] = []
    problems: list[str] = []
    for path in locate(spec, split, allow_hub=allow_hub).files:
        try:
            records.extend(read_records(path))
        except MalformedRows as err:
            problems.extend(err.problems)
            records.extend(err.records)
    if problems:
        raise MalformedRows(f"{len(problems)} malformed rows in {spec}", problems, records)
    return records


def _readable(path: Path) -> bool:
    return path.is_file() and path.suffix.lower().lstrip(".") in READERS and not path.name.startswith(".")


def _folder(spec: str, folder: Path, split: str) -> Source:
    if (folder / "dataset_dict.json").is_file():  # save_to_disk of a DatasetDict: one sub-folder per split
        names = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        chosen = _split_folder(names, split)
        if chosen is None:
            raise DataError(f"data.{split}: {folder} holds the splits {names}, none of them {split!r}")
        return _saved_dataset(spec, folder / chosen)
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return _saved_dataset(spec, folder)
    files = sorted(p for p in folder.rglob("*") if _readable(p) and not _hidden(p.relative_to(folder)))
    if not files:
        raise DataError(f"data.{split}: the folder {folder} holds no data file "
                        f"(readable: {', '.join('.' + n for n in READERS.names())})")
    by_split = {name: [p for p in files if _names_split(p.relative_to(folder), name)] for name in SPLIT_WORDS}
    if any(by_split.values()):  # a folder laid out by split: take this split's files only
        if not by_split.get(split):
            raise DataError(f"data.{split}: the folder {folder} has files for the splits "
                            f"{[k for k, v in by_split.items() if v]} but none for {split!r}")
        return Source(spec, "folder", tuple(by_split[split]))
    return Source(spec, "folder", tuple(files))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _names_split(relative: Path, split: str) -> bool:
    """Whether a word of the file's path (split on ``-``, ``_``, ``.``, ``/``) names ``split``."""
    words = re.split(r"[-_./\\]", str(relative.with_suffix("")).lower())
    return any(w in SPLIT_WORDS[split] for w in words)


def _split_folder(names: list[str], split: str) -> str | None:
    return next((n for n in names if n.lower() in SPLIT_WORDS.get(split, (split,))), None)


def _saved_dataset(spec: str, folder: Path) -> Source:
    """A ``save_to_disk`` folder: the Arrow files ``state.json`` lists, in order."""
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    files = tuple(folder / f["filename"] for f in state.get("_data_files", []))
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise DataError(f"{folder}: a datasets save_to_disk folder whose data files are missing: "
                        f"{missing or 'state.json lists none'}")
    return Source(spec, "save_to_disk", files)


def hub_cache() -> Path:
    """The local Hugging Face hub cache, where ``load_dataset`` and ``snapshot_download`` keep datasets."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_dataset(name: str) -> Path | None:
    """The newest snapshot folder of dataset ``name`` in the hub cache, or ``None``."""
    repo = hub_cache() / ("datasets--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
        return repo / "snapshots" / ref.read_text().strip()
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if repo.is_dir() else []
    return snapshots[-1] if snapshots else None


def _hub_dataset(name: str, split: str, allow_hub: bool) -> Source:
    folder = cached_dataset(name)
    if folder is None and allow_hub:
        from huggingface_hub import snapshot_download  # a dependency of transformers

        folder = Path(snapshot_download(name, repo_type="dataset"))
    if folder is None:
        raise DataError(f"data.{split}: {name} is neither a file nor a folder, and no dataset of that name is in "
                        f"the local Hugging Face cache ({hub_cache()}); download it once (`hf download {name} "
                        "--repo-type dataset`) or set allow_hub: true")
    found = _folder(name, folder, split)
    return Source(name, "hub cache", found.files)
