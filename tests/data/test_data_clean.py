"""clean repairs and drops what was planted, logs every change, and never touches its input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_jsonl
from tuneforge.cli import main
from tuneforge.data.clean import clean_file
from tuneforge.errors import ConfigError, UserError

ROWS = [
    {"text": "play some jazz", "label": "music"},
    {"text": "Play  some jazz ", "label": "music"},  # exact duplicate after normalisation
    {"text": "what is the weather in Oslo", "label": "weather"},
    {"text": "what is the weather in Oslo", "label": "music"},  # conflicting duplicate
    {"text": "play Clásicos de EspaÃ±a", "label": "music"},  # mojibake
    {"text": "mail jane@example.com now", "label": "music"},  # PII
    {"text": "  ", "label": "music"},  # empty
    {"messages": [{"role": "user", "content": "hi  there"}, {"role": "assistant", "content": "EspaÃ±ol"}]},
]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_clean_applies_fixes_and_logs_every_change(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    before = src.read_bytes()
    result = clean_file(src, tmp_path / "out.jsonl",
                        fixes=["encoding", "unicode", "whitespace", "pii_redact", "empty", "duplicates"])
    assert src.read_bytes() == before
    out = _read(result.output)
    texts = [r.get("text") for r in out]
    assert texts == ["play some jazz", "play Clásicos de España", "mail [EMAIL] now", None]
    assert out[-1]["messages"][1]["content"] == "Español" and out[-1]["messages"][0]["content"] == "hi there"
    log = _read(result.log)
    by_line = {(e["where"].rsplit(":", 1)[1], e["fix"]): e for e in log}
    assert by_line[("5", "encoding")]["after"] == "play Clásicos de España"
    assert by_line[("2", "duplicates")]["action"] == "dropped"
    assert "conflicting labels" in by_line[("3", "duplicates")]["reason"]
    assert by_line[("4", "duplicates")]["action"] == "dropped"
    assert by_line[("7", "empty")]["action"] == "dropped"
    assert by_line[("6", "pii_redact")]["after"] == "mail [EMAIL] now"
    assert result.rows_in == 8 and result.rows_out == 4


def test_pii_drop_and_near_duplicates(tmp_path: Path) -> None:
    rows = [{"text": "book a table for two at the harbour grill tonight", "label": "r"},
            {"text": "book a table for two at the harbour grill tonight please", "label": "r"},
            {"text": "call 415-555-2671", "label": "r"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    result = clean_file(src, tmp_path / "out.jsonl", fixes=["pii_drop", "near_duplicates"])
    assert [r["text"] for r in _read(result.output)] == [rows[0]["text"]]
    assert {e["fix"] for e in _read(result.log)} == {"pii_drop", "near_duplicates"}


def test_clean_refuses_to_overwrite_its_input_and_unknown_fixes(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    with pytest.raises(UserError, match="refusing to overwrite the input"):
        clean_file(src, src)
    with pytest.raises(ConfigError, match="unknown fix"):
        clean_file(src, tmp_path / "o.jsonl", fixes=["encodings"])


def test_clean_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert main(["data", "clean", str(src), "-o", str(tmp_path / "c.jsonl"), "--fix", "encoding,duplicates"]) == 0
    assert "encoding changed: 2" in capsys.readouterr().out
    assert (tmp_path / "c.log.jsonl").is_file()
    assert main(["data", "clean", str(src), "-o", str(src)]) == 2
