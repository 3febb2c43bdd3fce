"""tuneforge compare on tiny models: every baseline scores the same items, with intervals and paired tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.errors import UserError
from tuneforge.evaluate.baselines import System, nearest
from tuneforge.evaluate.compare import compare, score_system
from tuneforge.run.composed import finished_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    tmp = tmp_path_factory.mktemp("compare")
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(80))
    return api.train(base_recipe(tiny_encoder, "classification", train, tmp / "run", epochs=3, lr=3e-3),
                     echo=lambda *_: None).run_dir


def test_compare_puts_every_baseline_beside_the_fine_tune(tiny_run: Path, tiny_encoder: Path, tiny_decoder: Path,
                                                          tmp_path: Path) -> None:
    result = compare(tiny_run, baselines=["zero-shot", "few-shot", "retrieval", "knn", "tfidf"], k=3,
                     prompt_items=6, prompt_model=str(tiny_decoder), encoder_path=str(tiny_encoder),
                     output=tmp_path, echo=lambda *_: None)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["zero-shot", "few-shot", "retrieval", "knn", "tfidf", "fine-tuned"]
    n_test = result["n_test"]
    assert rows["few-shot"]["n_items"] == rows["retrieval"]["n_items"] == 6  # the prompting subsample
    assert rows["tfidf"]["n_items"] == rows["knn"]["n_items"] == n_test
    assert rows["tfidf"]["accuracy"] == 1.0  # the label is decided by one word: TF-IDF finds it
    for name, row in rows.items():
        lo, hi = row["ci"]["accuracy"]
        assert lo <= row["accuracy"] <= hi
        assert row["latency_ms"] > 0
        if name != "fine-tuned":
            vs = row["vs_fine_tuned"]
            assert vs["mcnemar"]["b"] + vs["mcnemar"]["c"] <= row["n_items"]
            assert vs["accuracy_gain"] == pytest.approx(vs["fine_tuned_accuracy_same_items"] - row["accuracy"])
    assert "vs_fine_tuned" not in rows["fine-tuned"]
    assert rows["fine-tuned"]["train_seconds"] > 0
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["rows"][0]["name"] == "zero-shot"
    assert "few-shot *" in (tmp_path / "compare.md").read_text()  # the subsample is flagged
    page = (tmp_path / "compare.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page


def test_paired_verdict_calls_a_large_gap_real_and_a_tie_not() -> None:
    refs = ["a", "b"] * 50
    perfect = System("fine-tuned", "", list(range(100)), [{"prediction": r} for r in refs], 1.0, 1.0)
    wrong = System("bad", "", list(range(100)), [{"prediction": "b" if r == "a" else "a"} for r in refs], 0.0, 1.0)
    same = System("same", "", list(range(100)), [{"prediction": r} for r in refs], 0.0, 1.0)
    assert score_system(wrong, refs, ["a", "b"], perfect)["vs_fine_tuned"]["verdict"] == "fine-tune better"
    assert score_system(same, refs, ["a", "b"], perfect)["vs_fine_tuned"]["verdict"] == "no real difference"


def test_nearest_equals_brute_force_sort() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    query = train[:5] + 0.01 * rng.normal(size=(5, 8))
    got = nearest(train, query, 4)
    expected = np.argsort(-(query @ train.T), axis=1)[:, :4]
    assert (got == expected).all()
    assert (got[:, 0] == np.arange(5)).all()  # each query's own perturbed row comes first


def test_compare_refuses_unknown_baselines_and_non_runs(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="baseline"):
        compare(tmp_path, baselines=["magic"], echo=lambda *_: None)
    with pytest.raises(UserError, match="neither a run folder nor a recipe"):
        finished_run(tmp_path / "missing", echo=lambda *_: None)


def test_compare_adds_another_run_on_the_same_test_rows(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    result = compare(tiny_run, baselines=["tfidf"], runs=[other], output=tmp_path / "out", echo=lambda *_: None)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["tfidf", "run:other", "fine-tuned"]
    same = rows["run:other"]["vs_fine_tuned"]  # the same weights: no discordant item, no difference
    assert same["mcnemar"]["b"] == same["mcnemar"]["c"] == 0 and same["verdict"] == "no real difference"
    fp = other / "data" / "fingerprints.json"
    data = json.loads(fp.read_text())
    data["splits"]["test"]["sha256"] = "0" * 64
    fp.write_text(json.dumps(data))
    with pytest.raises(UserError, match="same test items"):
        compare(tiny_run, baselines=["tfidf"], runs=[other], output=tmp_path / "out", echo=lambda *_: None)
