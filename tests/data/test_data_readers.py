"""Readers keep exact file:line positions, report every bad row at once, and validate rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.data.readers import READERS, Record, read_records
from tuneforge.data.validate import Problems, require_field, require_text
from tuneforge.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def positions(records: list[Record]) -> list[tuple[int, dict]]:
    return [(r.line, r.fields) for r in records]


def test_formats_are_registered():
    assert READERS.names() == ["arrow", "csv", "json", "jsonl", "parquet", "tsv", "txt"]


def test_jsonl_line_numbers_count_blank_lines(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a"}\n\n   \n{"text": "b"}\r\n\n{"text": "c"}')
    records = read_records(path)
    assert positions(records) == [(1, {"text": "a"}), (4, {"text": "b"}), (6, {"text": "c"})]
    assert records[1].source == str(path)
    assert records[1].where() == f"{path}:4"


def test_jsonl_keeps_u2028_inside_strings_on_one_line(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "a\u2028b"}\n{"text": "c"}\n')
    assert positions(read_records(path)) == [(1, {"text": "a\u2028b"}), (2, {"text": "c"})]


def test_jsonl_with_bom(tmp_path):
    path = write(tmp_path / "t.jsonl", '\ufeff{"text": "a"}\n')
    assert positions(read_records(path)) == [(1, {"text": "a"})]


def test_every_bad_jsonl_line_is_reported_in_one_error(tmp_path):
    lines = [
        '{"text": "ok"}',
        '{"text": "a" "label": 1}',  # missing comma
        "[1, 2]",  # not an object
        "",
        '{"text": "ok"}',
        '"just a string"',
        "{bad",
    ]
    path = write(tmp_path / "train.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_records(path)
    assert info.value.problems == [
        f"{path}:2: malformed JSON (Expecting ',' delimiter at column 14)",
        f"{path}:3: expected a JSON object, got array",
        f"{path}:6: expected a JSON object, got string",
        f"{path}:7: malformed JSON (Expecting property name enclosed in double quotes at column 2)",
    ]
    assert "4 malformed rows" in str(info.value)


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="not found: .*nope.jsonl"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="empty"):
        read_records(write(tmp_path / "e.jsonl", "\n  \n"))
    with pytest.raises(DataError, match=r"supported: \.arrow, \.csv, \.json, \.jsonl, \.parquet, \.tsv, \.txt"):
        read_records(write(tmp_path / "d.xml", "hello"))


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:2: not valid UTF-8"):
        read_records(path)


def test_json_array_records_the_line_each_element_starts_on(tmp_path):
    data = [{"text": "a"}, {"text": "b", "n": [1, 2]}]
    path = write(tmp_path / "d.json", "\ufeff" + json.dumps(data, indent=2))
    records = read_records(path)
    assert [r.fields for r in records] == data
    assert [r.line for r in records] == [2, 5]


def test_json_array_reports_non_objects_and_syntax_errors(tmp_path):
    path = write(tmp_path / "d.json", '[\n{"text": "a"},\n3,\n"x"\n]')
    with pytest.raises(DataError) as info:
        read_records(path)
    assert info.value.problems == [
        f"{path}:3: expected a JSON object, got number",
        f"{path}:4: expected a JSON object, got string",
    ]
    with pytest.raises(DataError, match=r"d2\.json:2: malformed JSON"):
        read_records(write(tmp_path / "d2.json", '[{"a": 1},\n {"a": 2} {"a": 3}]'))


def test_json_file_may_hold_jsonl(tmp_path):
    path = write(tmp_path / "d.json", '{"text": "a"}\n\n{"text": "b"}\n')
    assert positions(read_records(path)) == [(1, {"text": "a"}), (3, {"text": "b"})]


def test_pretty_printed_single_object_gets_a_clear_error(tmp_path):
    path = write(tmp_path / "d.json", json.dumps({"rows": [{"text": "a"}]}, indent=2))
    with pytest.raises(DataError, match="one JSON object spread over"):
        read_records(path)


def test_csv_line_numbers_with_a_quoted_multiline_field(tmp_path):
    text = 'text,label\r\n"first\nsecond\nthird",a\r\n\r\nplain,\r\n"x, ""quoted""",b\r\n'
    path = write(tmp_path / "d.csv", "\ufeff" + text)
    assert positions(read_records(path)) == [
        (2, {"text": "first\nsecond\nthird", "label": "a"}),
        (6, {"text": "plain", "label": ""}),
        (7, {"text": 'x, "quoted"', "label": "b"}),
    ]


def test_tsv(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\nhello, world\tpos\n\tneg\n")
    assert positions(read_records(path)) == [
        (2, {"text": "hello, world", "label": "pos"}),
        (3, {"text": "", "label": "neg"}),
    ]


def test_csv_reports_wrong_cell_counts_together(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,b\nonly\na,b,c\n")
    with pytest.raises(DataError) as info:
        read_records(path)
    assert info.value.problems == [
        f"{path}:3: expected 2 cells (text, label), got 1",
        f"{path}:4: expected 2 cells (text, label), got 3",
    ]


def test_csv_unclosed_quote_names_the_row_it_starts_on(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\na,b\n"never closed,c\nd,e\n')
    with pytest.raises(DataError, match=r"d\.csv:3: malformed CSV .*never closed"):
        read_records(path)


def test_csv_header_only_and_duplicate_columns(tmp_path):
    with pytest.raises(DataError, match="header but no rows"):
        read_records(write(tmp_path / "h.csv", "text,label\n"))
    with pytest.raises(DataError, match=r"dup\.csv:1: duplicate column names.*'a'"):
        read_records(write(tmp_path / "dup.csv", "a,b,a\n1,2,3\n"))


def test_csv_cells_longer_than_the_csv_module_default(tmp_path):
    long = "x" * 200_000
    path = write(tmp_path / "d.csv", f'text\n"{long}"\n')
    assert read_records(path)[0].fields["text"] == long


def test_parquet_round_trip(tmp_path):
    rows = [
        {"text": "a", "label": 1, "score": 0.5},
        {"text": "b", "label": None, "score": 1.5},
        {"text": "c\nd", "label": 3, "score": -2.0},
    ]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = read_records(path)
    assert positions(records) == [(1, rows[0]), (2, rows[1]), (3, rows[2])]
    assert records[2].where() == f"{path}:3"


def test_parquet_empty_and_corrupt(tmp_path):
    empty = tmp_path / "e.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    with pytest.raises(DataError, match="empty"):
        read_records(empty)
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_records(write(tmp_path / "bad.parquet", "not parquet"))


def test_validate_helpers_report_file_and_line(tmp_path):
    path = write(
        tmp_path / "train.jsonl",
        "\n".join(
            [
                '{"text": "fine", "label": "a"}',
                '{"prompt": "x", "label": "b"}',
                '{"text": 3, "label": null}',
                '{"text": "  ", "label": "c"}',
            ]
        ),
    )
    records = read_records(path)
    problems = Problems()
    texts = [require_text(r, "text", problems) for r in records]
    labels = [require_field(r, "label", problems) for r in records]
    assert texts == ["fine", None, None, None]
    assert labels == ["a", "b", None, "c"]
    assert problems.messages() == [
        f"{path}:2: missing field 'text' (fields present: prompt, label)",
        f"{path}:3: field 'text' must be a string, got int",
        f"{path}:4: empty text in field 'text'",
        f"{path}:3: field 'label' is null",
    ]
    assert len(problems) == 4
    with pytest.raises(DataError) as info:
        problems.raise_if_any("train data")
    message = str(info.value)
    assert message.startswith("3 bad row(s) in train data; fix them and re-run (nothing was trained)")
    assert f"{path}:2: missing field 'text'" in message
    assert info.value.problems == problems.messages()


def test_no_problems_raise_nothing():
    problems = Problems()
    assert require_text(Record("d.csv", 2, {"text": "ok"}), "text", problems) == "ok"
    assert require_field(Record("d.csv", 2, {"n": 0}), "n", problems) == 0
    assert len(problems) == 0
    problems.raise_if_any("train data")
