"""Splits are deterministic, stratified, disjoint and complete; fingerprints are stable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tuneforge.data.readers import Record
from tuneforge.data.split import fingerprint_file, fingerprint_records, split_records
from tuneforge.errors import ConfigError, DataError


def make_records(labels: list[str]) -> list[Record]:
    return [
        Record("d.jsonl", i, {"text": f"row {i}", "label": label})
        for i, label in enumerate(labels, start=1)
    ]


def by_label(record: Record) -> str:
    return record.fields["label"]


def lines(records: list[Record]) -> list[int]:
    return [r.line for r in records]


def imbalanced() -> list[Record]:
    # 60 a, 27 b, 9 c, 3 d, 1 e, interleaved so that order preservation is visible
    labels = ["a"] * 60 + ["b"] * 27 + ["c"] * 9 + ["d"] * 3 + ["e"]
    return make_records([labels[(i * 37) % 100] for i in range(100)])


def test_split_is_deterministic_and_depends_on_the_seed():
    records = make_records(["x"] * 50)
    first = split_records(records, validation=0.2, test=0.1, seed=7)
    again = split_records(records, validation=0.2, test=0.1, seed=7)
    other = split_records(records, validation=0.2, test=0.1, seed=8)
    assert [lines(s) for s in first] == [lines(s) for s in again]
    assert [lines(s) for s in first] != [lines(s) for s in other]
    assert [len(s) for s in first] == [35, 10, 5]


def test_split_does_not_depend_on_the_hash_seed():
    code = (
        "from tuneforge.data.readers import Record\n"
        "from tuneforge.data.split import split_records\n"
        "rs = [Record('d', i, {'label': 'abcdefg'[i % 7]}) for i in range(1, 200)]\n"
        "tr, va, te = split_records(rs, validation=0.2, test=0.1, seed=3,\n"
        "                           stratify_by=lambda r: r.fields['label'])\n"
        "print([r.line for r in va], [r.line for r in te])\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": src}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1


def test_splits_are_disjoint_complete_and_keep_the_original_order():
    records = imbalanced()
    splits = split_records(records, validation=0.15, test=0.1, seed=0, stratify_by=by_label)
    all_lines = [line for s in splits for line in lines(s)]
    assert sorted(all_lines) == lines(records)  # union = input, no overlap
    assert len(set(all_lines)) == len(all_lines)
    for s in splits:
        assert lines(s) == sorted(lines(s))


@pytest.mark.parametrize("validation,test", [(0.1, 0.1), (0.2, 0.0), (0.15, 0.25), (0.33, 0.33)])
@pytest.mark.parametrize("seed", [0, 1, 123])
def test_stratified_proportions_hold_within_one_row_per_class(validation, test, seed):
    records = imbalanced()
    splits = split_records(
        records, validation=validation, test=test, seed=seed, stratify_by=by_label
    )
    totals = Counter(by_label(r) for r in records)
    counts = [Counter(by_label(r) for r in s) for s in splits]
    for label, n in totals.items():
        if n < 1 + (validation > 0) + (test > 0):
            # documented: a class too small to be both trained on and evaluated stays in train
            assert counts[0][label] == n
            continue
        assert abs(counts[1][label] - n * validation) <= 1, label
        assert abs(counts[2][label] - n * test) <= 1, label
        assert counts[0][label] >= 1
        for which, fraction in ((1, validation), (2, test)):
            if fraction > 0:
                assert counts[which][label] >= 1  # every class is evaluated when it can be


def test_class_split_does_not_depend_on_other_classes():
    records = imbalanced()
    with_all = split_records(records, validation=0.2, test=0.1, seed=5, stratify_by=by_label)
    only_a = [r for r in records if by_label(r) == "a"]
    alone = split_records(only_a, validation=0.2, test=0.1, seed=5, stratify_by=by_label)
    for s_all, s_alone in zip(with_all, alone):
        assert [r.line for r in s_all if by_label(r) == "a"] == lines(s_alone)


def test_zero_fractions_give_empty_splits():
    records = make_records(["x"] * 10)
    train, validation, test = split_records(records, validation=0.0, test=0.0, seed=0)
    assert (lines(train), validation, test) == (lines(records), [], [])
    train, validation, test = split_records(records, validation=0.3, test=0.0, seed=0)
    assert (len(train), len(validation), test) == (7, 3, [])


def sizes(n: int, validation: float, test: float) -> list[int]:
    splits = split_records(make_records(["x"] * n), validation=validation, test=test, seed=0)
    return [len(s) for s in splits]


def test_small_data_still_gets_one_row_per_non_zero_split():
    assert sizes(3, validation=0.01, test=0.01) == [1, 1, 1]
    assert sizes(2, validation=0.01, test=0.0) == [1, 1, 0]
    # 2 rows cannot give train, validation and test one each: everything stays in train
    assert sizes(2, validation=0.1, test=0.1) == [2, 0, 0]
    # rounding up must never empty train; on a tie test gives a row back, not validation
    assert sizes(4, validation=0.45, test=0.45) == [1, 2, 1]


def test_changing_test_keeps_validation():
    records = make_records(["x"] * 40)
    _, validation_a, _ = split_records(records, validation=0.2, test=0.1, seed=2)
    _, validation_b, _ = split_records(records, validation=0.2, test=0.3, seed=2)
    assert lines(validation_a) == lines(validation_b)


@pytest.mark.parametrize(
    "validation,test", [(-0.1, 0.1), (1.0, 0.0), (0.1, 1.0), (0.6, 0.4), (float("nan"), 0.1)]
)
def test_bad_fractions_are_refused(validation, test):
    with pytest.raises(ConfigError):
        split_records(make_records(["x"] * 10), validation=validation, test=test, seed=0)


def test_fingerprint_file_is_sha256_of_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / "d.jsonl"
    data = b'{"text": "a"}\n' * 100_000  # > 1 MiB, so several chunks
    path.write_bytes(data)
    assert fingerprint_file(path) == hashlib.sha256(data).hexdigest()
    assert fingerprint_file(path) == fingerprint_file(path)
    with pytest.raises(DataError, match="not found"):
        fingerprint_file(tmp_path / "missing.jsonl")


def test_fingerprint_records_is_stable_and_order_sensitive():
    a = Record("x.jsonl", 1, {"text": "a", "label": 1})
    a_reordered_keys = Record("elsewhere.csv", 9, {"label": 1, "text": "a"})
    b = Record("x.jsonl", 2, {"text": "b", "label": 2})
    assert fingerprint_records([a, b]) == fingerprint_records([a_reordered_keys, b])
    assert fingerprint_records([a, b]) != fingerprint_records([b, a])
    assert fingerprint_records([a, b]) != fingerprint_records([a])
    # pinned: sha256 of '{"label":1,"text":"a"}\n{"label":2,"text":"b"}\n'; a change here
    # silently invalidates every fingerprint recorded by earlier runs
    golden = "d0c8f4a1879e20c7292998db1877754a86b5665a8e0a81e3abca3055bae421e1"
    assert fingerprint_records([a, b]) == golden


def test_fingerprint_records_accepts_values_json_cannot_hold():
    import datetime

    record = Record("d.parquet", 1, {"day": datetime.date(2024, 1, 1), "blob": b"x"})
    assert fingerprint_records([record]) == fingerprint_records([record])
