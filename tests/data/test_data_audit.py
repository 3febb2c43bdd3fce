"""The audit finds every planted problem and leaves clean rows alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_jsonl
from tuneforge.cli import main
from tuneforge.data.audit import AuditOptions, audit_files, render_table, write_report
from tuneforge.data.pii import find_pii, redact

CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon", "Dublin"]
DISHES = ["sushi", "tapas", "pizza", "ramen", "curry", "pho", "tacos", "dumplings"]


def clean_rows() -> list[dict]:
    rows = [{"text": f"what is the weather like in {c} tomorrow morning", "label": "weather"} for c in CITIES]
    rows += [{"text": f"book a table for {d} near the station tonight", "label": "restaurant"} for d in DISHES]
    rows += [{"text": f"play the song number {n} by the band from {c}", "label": "music"}
             for n, c in zip(["one", "two", "three", "four", "five", "six"], CITIES)]
    return rows


PLANTED = [
    {"text": "What is the weather like in PARIS  tomorrow morning", "label": "weather"},  # exact dup of row 1
    {"text": "what is the weather like in Berlin tomorrow morning please", "label": "weather"},  # near dup of row 2
    {"text": "play something by Los Del RÃ­o from EspaÃ±a", "label": "music"},  # mojibake
    {"text": "mail me at jane.doe@example.com about it", "label": "music"},  # e-mail
    {"text": "call me on (415) 555-2671 tonight", "label": "music"},  # phone
    {"text": "charge card 4111 1111 1111 1111 for the table", "label": "restaurant"},  # card (Luhn valid)
    {"text": "wire it to DE89 3704 0044 0532 0130 00 now", "label": "restaurant"},  # IBAN
    {"text": "deliver to 350 Fifth Avenue, New York, NY 10118", "label": "restaurant"},  # address
    {"text": "   ", "label": "music"},  # empty text
    {"text": "what is the weather like in Lisbon tomorrow evening", "label": "restaurant"},  # label noise
    {"text": "play Beyonc\ufffd on the radio", "label": "music"},  # lost bytes
]
NOT_PII = {"text": "order 4111 1111 1111 1112 seats for 20:30 on 2017-05-12", "label": "restaurant"}  # Luhn fails


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    train = write_jsonl(tmp_path / "train.jsonl", clean_rows() + PLANTED + [NOT_PII, {"label": "music"}])
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"text": "book a table for sushi near the station tonight", "label": "restaurant"},  # exact leak
        {"text": "play the song number one by the band from Paris now", "label": "music"},  # near leak
        {"text": "set an alarm for seven", "label": "alarm"},  # clean
    ])
    return train, test


def _lines(report, check: str, file: str | None = None) -> set[int]:
    return {int(r["where"].rsplit(":", 1)[1]) for r in report.flagged(check, file)}


def test_audit_finds_every_planted_problem(files: tuple[Path, Path]) -> None:
    train, test = files
    report = audit_files([train], test=test)
    n = len(clean_rows())
    line = {i: n + 1 + i for i in range(len(PLANTED))}  # 1-based line of PLANTED[i]
    assert _lines(report, "exact_duplicates", str(train)) == {line[0]}
    assert line[1] in _lines(report, "near_duplicates", str(train))
    assert _lines(report, "mojibake") == {line[2], line[10]}
    assert report.flagged("mojibake")[0]["fixed"] == "play something by Los Del Río from España"
    assert report.flagged("mojibake")[1]["fixed"] is None
    assert _lines(report, "pii") == {line[3], line[4], line[5], line[6], line[7]}
    kinds = {s["kind"] for r in report.flagged("pii") for s in r["pii"]}
    assert kinds == {"email", "phone", "card_number", "iban", "address"}
    assert _lines(report, "fields", str(train)) == {line[8], n + len(PLANTED) + 2}
    assert line[9] in _lines(report, "label_noise", str(train))
    assert _lines(report, "leakage") == {1, 2}
    # clean rows are not flagged by any row-level problem check
    problems = ("exact_duplicates", "mojibake", "pii", "fields", "leakage")
    flagged = set().union(*(_lines(report, c, str(train)) for c in problems))
    assert not flagged & set(range(1, n + 1))
    assert _lines(report, "pii", str(test)) == set() and _lines(report, "fields", str(test)) == set()


def test_label_distribution_and_rare_labels(files: tuple[Path, Path]) -> None:
    _, test = files
    report = audit_files([test], checks=["labels"])
    finding = report.findings[str(test)][0]
    assert finding.stats["counts"] == {"restaurant": 1, "music": 1, "alarm": 1}
    assert finding.stats["rare"] == ["alarm", "music", "restaurant"]


def test_lengths_with_a_tokenizer(tmp_path: Path, tiny_decoder: Path) -> None:
    rows = [{"text": "short text here", "label": "a"} for _ in range(20)]
    rows.append({"text": " ".join(["word"] * 200), "label": "b"})
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    report = audit_files([path], options=AuditOptions(model=str(tiny_decoder), max_length=32), checks=["lengths"])
    f = report.findings[str(path)][0]
    assert f.stats["truncated_at_max_length"] == 1
    assert _lines(report, "lengths") == {21}


def test_chat_rows(tmp_path: Path, tiny_decoder: Path) -> None:
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    rows = [
        ok,
        {"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}]},  # order
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 60}]},  # cut off
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},  # no loss
        # long prompt
        {"messages": [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "ok"}]},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    report = audit_files([path], options=AuditOptions(model=str(tiny_decoder), max_length=96), checks=["chat"])
    notes = {int(r["where"].rsplit(":", 1)[1]): r["note"] for r in report.flagged("chat")}
    assert set(notes) == {2, 3, 4, 5}
    assert "role/turn order" in notes[2]
    assert "cut off" in notes[3] and "end-of-turn" in notes[3]
    assert "no loss tokens" in notes[4]
    assert notes[5].startswith("prompt truncated")  # the answer survives: training drops the oldest prompt tokens


def test_outputs_and_cli(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, test = files
    out = tmp_path / "audit"
    assert main(["data", "audit", str(train), "--test", str(test), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mojibake" in printed and "leakage" in printed
    data = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert data["findings"]["leakage"][0]["count"] == 2
    page = (out / "audit.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "EspaÃ±a" in page and "<script" not in page


def test_html_escapes_data(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "<script>alert(1)</script>", "label": "a"}] * 2)
    report = audit_files([path], checks=["exact_duplicates"])
    write_report(report, tmp_path / "out")
    page = (tmp_path / "out" / "audit.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "exact_duplicates" in render_table(report)


def test_unknown_check_is_a_clear_error(files: tuple[Path, Path]) -> None:
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown audit check 'nope'"):
        audit_files([files[0]], checks=["nope"])


def test_redact_replaces_only_the_spans() -> None:
    text = "write to bob@example.org or 4111-1111-1111-1111"
    assert redact(text, find_pii(text)) == "write to [EMAIL] or [CARD_NUMBER]"
    assert find_pii("table for 4 at 20:30 on 2017-05-12, 12 people") == []
