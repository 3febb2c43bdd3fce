"""Blind review: sides shuffled and hidden, two raters decoded through a known key, kappa as scikit-learn has it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score

from tuneforge.cli import main
from tuneforge.errors import DataError, UserError
from tuneforge.evaluate.review import (Rating, cohen_kappa, items_from_runs, make_sheet, preference_pairs, read_key,
                                       read_ratings, sheet_html, summarise, write_sheet)

N = 12


def fake_run(root: Path, tuned: list[str], base: list[str] | None = None) -> Path:
    """The files of a finished run that review reads: the saved test split and the predictions."""
    (root / "data").mkdir(parents=True)
    (root / "predictions").mkdir()
    rows = [{"source": "test.jsonl", "line": i + 1, "fields": {"prompt": f"question {i}", "completion": f"gold {i}"}}
            for i in range(N)]
    (root / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for side, answers in (("tuned", tuned), ("base", base)):
        if answers is not None:
            (root / "predictions" / f"{side}.jsonl").write_text(
                "".join(json.dumps({"prediction": a}) + "\n" for a in answers), encoding="utf-8")
    return root


GOOD = [f"good answer {i}" for i in range(N)]
POOR = [f"poor answer {i}" for i in range(N)]


def fill(sheet_csv: Path, out: Path, rater: str, pick: callable) -> Path:
    """A rater who prefers whichever side holds a 'good' answer, as ``pick(row, good_side)`` decides."""
    rows = list(csv.DictReader(sheet_csv.open(encoding="utf-8")))
    for r in rows:
        good_side = "1" if r["answer_1"].startswith("good") else "2"
        r["preferred"], r["rater"] = pick(int(r["row"]), good_side), rater
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_sheet_hides_and_shuffles_the_sides(tmp_path: Path) -> None:
    systems, items = items_from_runs(fake_run(tmp_path / "a", GOOD, POOR))
    assert systems == ("a:tuned", "a:base") and items[3].prompt == "question 3"
    sheet = make_sheet(systems, items, 10, seed=1)
    assert len(sheet.rows) == 10 and make_sheet(systems, items, 10, seed=1).key == sheet.key
    lefts = [sheet.key[r["row"]]["left"] for r in sheet.rows]
    assert 0 < lefts.count("a:tuned") < 10  # both sides used
    for r in sheet.rows:
        k = sheet.key[r["row"]]
        assert k["answers"][k["left"]] == r["answer_1"] and k["answers"][k["right"]] == r["answer_2"]
    page = sheet_html(sheet.rows)
    assert "a:tuned" not in page and "http" not in page and "good answer" in page
    paths = write_sheet(sheet, tmp_path / "sheet", tmp_path / "secret" / "key.json")
    assert "a:tuned" not in paths["csv"].read_text() and read_key(paths["key"])[0] == systems


def test_two_raters_give_win_tie_loss_kappa_and_pairs(tmp_path: Path) -> None:
    systems, items = items_from_runs(fake_run(tmp_path / "a", GOOD), fake_run(tmp_path / "b", POOR))
    sheet = make_sheet(systems, items, N, seed=0)
    paths = write_sheet(sheet, tmp_path / "sheet")
    one = fill(paths["csv"], tmp_path / "one.csv", "ann", lambda row, good: good)  # always right
    # bob: ties on rows 1-2, prefers the poor answer on rows 3-4, else agrees
    two = fill(paths["csv"], tmp_path / "two.csv", "bob",
               lambda row, good: "tie" if row <= 2 else ({"1": "2", "2": "1"}[good] if row <= 4 else good))
    ratings = read_ratings([one, two], sheet.key)
    summary = summarise(ratings, systems)
    # per item majority: rows 1-4 split between the raters -> tie; rows 5-12 both prefer A
    assert (summary["wins"], summary["ties"], summary["losses"]) == (8, 4, 0)
    assert summary["score"] == pytest.approx((8 + 2) / 12) and summary["interval"][0] < summary["score"]
    ann = [r.verdict for r in ratings if r.rater == "ann"]
    bob = [r.verdict for r in ratings if r.rater == "bob"]
    [agreement] = summary["agreement"]
    assert agreement["kappa"] == pytest.approx(cohen_kappa_score(ann, bob)) and agreement["items"] == N
    pairs = preference_pairs(ratings, sheet.key)
    assert len(pairs) == 8 and all(p["chosen"].startswith("good") and p["rejected"].startswith("poor") for p in pairs)
    assert pairs[0]["prompt"].startswith("question")


def test_kappa_equals_scikit_learn_on_random_labels() -> None:
    import random

    rng = random.Random(3)
    for _ in range(20):
        a = [rng.choice("xyz") for _ in range(30)]
        b = [x if rng.random() < 0.6 else rng.choice("xyz") for x in a]
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_bad_ratings_and_runs_are_reported(tmp_path: Path) -> None:
    key = {"1": {"left": "A", "right": "B"}}
    bad = tmp_path / "r.csv"
    bad.write_text("row,preferred\n1,maybe\n7,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="(?s)2 bad rating.*maybe.*not in the key"):
        read_ratings([bad], key)
    fake_run(tmp_path / "a", GOOD)
    with pytest.raises(UserError, match="no base predictions"):
        items_from_runs(tmp_path / "a")
    other = fake_run(tmp_path / "c", GOOD)
    (other / "data" / "test.jsonl").write_text('{"source": "t", "line": 1, "fields": {"prompt": "x"}}\n')
    with pytest.raises(UserError, match="different test items"):
        items_from_runs(tmp_path / "a", other)
    assert summarise([Rating("r", "1", "A")], ("A", "B"))["wins"] == 1


def test_cli_exports_and_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path / "a", GOOD, POOR)
    assert main(["review", "export", str(run), "-n", "5", "-o", str(tmp_path / "s")]) == 0
    filled = fill(tmp_path / "s" / "sheet.csv", tmp_path / "r.csv", "ann", lambda row, good: good)
    assert main(["review", "import", str(filled), "--key", str(tmp_path / "s" / "key.json"),
                 "-o", str(tmp_path / "pairs.jsonl")]) == 0
    assert "5 wins, 0 ties, 0 losses" in capsys.readouterr().out
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 5
    assert main(["review", "export", str(tmp_path / "nothing")]) == 2
