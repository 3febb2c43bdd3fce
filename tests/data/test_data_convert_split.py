"""Format conversion round-trips, and group-aware splits keep groups and augmented rows together."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import write_jsonl
from tuneforge.cli import main
from tuneforge.data.convert import FORMATS, check_messages, convert_file, read_conversation, split_transcript
from tuneforge.data.split_groups import split_grouped
from tuneforge.data.readers import Record, read_records
from tuneforge.errors import DataError

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                     {"role": "assistant", "content": "Paris."}]}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["messages", "openai", "prompt_completion", "alpaca"])
def test_single_turn_round_trip(tmp_path: Path, fmt: str) -> None:
    src = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT["messages"][1:]}])
    convert_file(src, tmp_path / "x.jsonl", to=fmt)
    convert_file(tmp_path / "x.jsonl", tmp_path / "back.jsonl", to="messages", from_=fmt)
    assert _read(tmp_path / "back.jsonl") == [{"messages": CHAT["messages"][1:]}]


def test_preference_formats_round_trip(tmp_path: Path) -> None:
    pair = {"prompt": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: tell me a joke\n\nAssistant:",
            "chosen": "Why did the chicken cross the road?", "rejected": "No."}
    src = write_jsonl(tmp_path / "pairs.jsonl", [pair])
    convert_file(src, tmp_path / "oa.jsonl", to="openai_preference")
    row = _read(tmp_path / "oa.jsonl")[0]
    assert [m["role"] for m in row["input"]["messages"]] == ["user", "assistant", "user"]
    assert row["non_preferred_output"] == [{"role": "assistant", "content": "No."}]
    convert_file(tmp_path / "oa.jsonl", tmp_path / "back.jsonl", to="preference")
    again = read_conversation(read_records(tmp_path / "back.jsonl")[0])
    assert again == read_conversation(read_records(src)[0])
    with pytest.raises(DataError, match="needs a rejected answer"):
        convert_file(write_jsonl(tmp_path / "c.jsonl", [CHAT]), tmp_path / "p.jsonl", to="preference")


def test_multi_turn_into_single_turn_is_refused_with_the_line(tmp_path: Path) -> None:
    two = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    src = write_jsonl(tmp_path / "chat.jsonl", [CHAT, two])
    with pytest.raises(DataError, match=r"chat.jsonl:2: cannot write as alpaca"):
        convert_file(src, tmp_path / "a.jsonl", to="alpaca")
    result = convert_file(src, tmp_path / "a.jsonl", to="alpaca", skip_invalid=True)
    assert result.rows == 1 and _read(tmp_path / "a.jsonl")[0]["instruction"] == "Be brief.\n\nCapital of France?"


def test_turn_order_rules() -> None:
    with pytest.raises(ValueError, match="two user turns"):
        check_messages([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                        {"role": "assistant", "content": "c"}])
    with pytest.raises(ValueError, match="system message may only come first"):
        check_messages([{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                        {"role": "assistant", "content": "c"}])
    assert split_transcript("\n\nHuman: hi\n\nAssistant: yo") == [{"role": "user", "content": "hi"},
                                                                   {"role": "assistant", "content": "yo"}]
    assert "openai" in FORMATS and "text_label" in FORMATS


def test_convert_cli(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": "play jazz", "label": "music"}])
    assert main(["data", "convert", str(src), "-o", str(tmp_path / "o.jsonl"), "--to", "prompt_completion"]) == 0
    assert _read(tmp_path / "o.jsonl") == [{"prompt": "play jazz", "completion": "music"}]


def _records(n_groups: int) -> list[Record]:
    recs = []
    for g in range(n_groups):
        for k in range(1 + g % 3):
            recs.append(Record("d.jsonl", len(recs) + 1, {"text": f"g{g} r{k}", "user": f"u{g}", "label": "ab"[g % 2]}))
    return recs


def test_group_split_keeps_every_group_in_one_split() -> None:
    recs = _records(60)
    result = split_grouped(recs, validation=0.2, test=0.2, seed=3, stratify_field="label", group_field="user")
    where = {}
    for name, rows in result.splits.items():
        for r in rows:
            assert where.setdefault(r.fields["user"], name) == name
    assert sum(len(v) for v in result.splits.values()) == len(recs)
    test_labels = Counter(r.fields["label"] for r in result.splits["test"])
    assert set(test_labels) == {"a", "b"}
    again = split_grouped(recs, validation=0.2, test=0.2, seed=3, stratify_field="label", group_field="user")
    assert again.splits == result.splits


def test_augmented_rows_never_reach_held_out_splits(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(40)]
    rows += [{"text": f"row {i} again", "label": "ab"[i % 2], "augmented": {"op": "swap", "source": f"x:{i + 1}"}}
             for i in range(40)]
    recs = [Record("x", i + 1, r) for i, r in enumerate(rows)]
    result = split_grouped(recs, validation=0.1, test=0.2, seed=0, stratify_field="label")
    for name in ("validation", "test"):
        assert not any(r.fields.get("augmented") for r in result.splits[name])
    held_out = {r.where() for n in ("validation", "test") for r in result.splits[n]}
    assert {r.fields["augmented"]["source"] for r in result.dropped_augmented} == held_out
    src = write_jsonl(tmp_path / "aug.jsonl", rows)
    assert main(["data", "split", str(src), "--out", str(tmp_path / "s"), "--test", "0.2", "--stratify", "label"]) == 0
    assert not any("augmented" in r for r in _read(tmp_path / "s" / "test.jsonl"))
