"""A split from a file, a folder or glob of shards, a `datasets` save_to_disk folder, or the local hub cache."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from tuneforge.data.sources import locate, read_source
from tuneforge.errors import DataError
from tuneforge.recipe import recipe_from_dict


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _texts(records: list) -> list[str]:
    return [r.fields["text"] for r in records]


def test_a_folder_of_shards_reads_every_file_in_name_order(tmp_path: Path) -> None:
    _jsonl(tmp_path / "d" / "part-b.jsonl", [{"text": "b1"}])
    _jsonl(tmp_path / "d" / "part-a.jsonl", [{"text": "a1"}, {"text": "a2"}])
    (tmp_path / "d" / "README.md").write_text("not data")
    records = read_source(tmp_path / "d", "train")
    assert _texts(records) == ["a1", "a2", "b1"]
    assert records[2].where() == f"{tmp_path / 'd' / 'part-b.jsonl'}:1"  # rows still name their file and line


def test_a_folder_laid_out_by_split_gives_each_split_its_files(tmp_path: Path) -> None:
    _jsonl(tmp_path / "d" / "data" / "train-00000-of-00002.jsonl", [{"text": "t1"}])
    _jsonl(tmp_path / "d" / "data" / "train-00001-of-00002.jsonl", [{"text": "t2"}])
    _jsonl(tmp_path / "d" / "data" / "test-00000-of-00001.jsonl", [{"text": "x"}])
    assert _texts(read_source(tmp_path / "d", "train")) == ["t1", "t2"]
    assert _texts(read_source(tmp_path / "d", "test")) == ["x"]
    with pytest.raises(DataError, match="none for 'validation'"):
        read_source(tmp_path / "d", "validation")


def test_a_glob_pattern(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a1.jsonl", [{"text": "1"}])
    _jsonl(tmp_path / "a2.jsonl", [{"text": "2"}])
    _jsonl(tmp_path / "b.jsonl", [{"text": "no"}])
    assert _texts(read_source(str(tmp_path / "a*.jsonl"), "train")) == ["1", "2"]
    with pytest.raises(DataError, match="matches no data file"):
        read_source(str(tmp_path / "z*.jsonl"), "train")


def _save_to_disk_by_hand(folder: Path, rows: list[dict]) -> None:
    """The layout `Dataset.save_to_disk` writes: Arrow stream shards listed in state.json."""
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")


def test_a_save_to_disk_folder_and_a_dataset_dict(tmp_path: Path) -> None:
    _save_to_disk_by_hand(tmp_path / "dd" / "train", [{"text": "s1", "label": "a"}, {"text": "s2", "label": "b"}])
    _save_to_disk_by_hand(tmp_path / "dd" / "test", [{"text": "s3", "label": "a"}])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert _texts(read_source(tmp_path / "dd" / "train", "train")) == ["s1", "s2"]
    assert _texts(read_source(tmp_path / "dd", "test")) == ["s3"]
    assert locate(tmp_path / "dd", "train").kind == "save_to_disk"


def test_a_folder_written_by_the_datasets_library(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "r1", "label": 0}, {"text": "r2", "label": 1}]),
                               "validation": datasets.Dataset.from_list([{"text": "v", "label": 0}])})
    dd.save_to_disk(str(tmp_path / "saved"))
    records = read_source(tmp_path / "saved", "train")
    assert [(r.fields["text"], r.fields["label"]) for r in records] == [("r1", 0), ("r2", 1)]
    assert _texts(read_source(tmp_path / "saved", "validation")) == ["v"]


def _fake_hub_cache(root: Path, name: str) -> Path:
    repo = root / ("datasets--" + name.replace("/", "--"))
    snapshot = repo / "snapshots" / "abc123"
    _jsonl(snapshot / "data" / "train.jsonl", [{"text": "hub-train", "label": "a"}, {"text": "h2", "label": "b"}])
    _jsonl(snapshot / "data" / "test.jsonl", [{"text": "hub-test", "label": "a"}])
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    return snapshot


def test_a_dataset_name_resolves_from_the_local_hub_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_cache(tmp_path / "hub", "acme/reviews")
    assert _texts(read_source("acme/reviews", "test")) == ["hub-test"]
    assert locate("acme/reviews", "train").kind == "hub cache"
    with pytest.raises(DataError, match="allow_hub: true"):
        read_source("acme/not-downloaded", "train")


def test_the_recipe_accepts_a_folder_a_glob_and_a_dataset_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path / "shards" / "a.jsonl", [{"text": "x", "label": "a"}])
    base = {"task": "classification", "model": "minilm-l6", "output": str(tmp_path / "run")}
    recipe = recipe_from_dict({**base, "data": {"train": "shards", "test": "shards/*.jsonl", "validation": "acme/r"}})
    assert recipe.data.train == tmp_path / "shards" and recipe.data.test == tmp_path / "shards" / "*.jsonl"
    assert str(recipe.data.validation) == "acme/r"
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="data.train: file not found: nope.jsonl"):
        recipe_from_dict({**base, "data": {"train": "nope.jsonl"}})
