"""``tuneforge monitor`` on a tiny run: a planted drift is found, a same-distribution sample is not."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.errors import DataError, UserError
from tuneforge.deploy.monitor import Thresholds, label_shift, length_drift, monitor
from tuneforge.serve.app import create_app
from tuneforge.serve.config import ServeConfig
from tuneforge.serve.served import ServedModel


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    tmp = tmp_path_factory.mktemp("monitor")
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(80))
    recipe = base_recipe(tiny_encoder, "classification", train, tmp / "run", epochs=4, lr=3e-3)
    recipe["eval"]["base"] = False
    return api.train(recipe, echo=lambda *_: None).run_dir


def serve_and_log(run: Path, texts: list[str], log: Path) -> Path:
    """Send ``texts`` through the real server with request logging on, one request each."""
    with TestClient(create_app(ServedModel.from_run(run), ServeConfig(log_requests=log))) as client:
        for t in texts:
            assert client.post("/v1/classify", json={"texts": [t]}).status_code == 200
        assert client.post("/v1/classify", json={"texts": []}).status_code == 422  # one client error
    return log


def same_distribution(n: int, seed: int) -> list[str]:
    rows = sentiment_rows(80)  # the generator the training data came from
    rng = random.Random(seed)
    return [rows[rng.randrange(len(rows))]["text"] for _ in range(n)]


def drifted(n: int) -> list[str]:
    """Another domain: bank requests, longer, with words the model never saw."""
    verbs = ["transfer", "withdraw", "deposit", "schedule", "cancel"]
    return [f"please {verbs[i % 5]} {100 + i} dollars from my checking account to savings before friday "
            f"and email the receipt to my accountant number {i}" for i in range(n)]


def test_planted_drift_is_found_and_retraining_recommended(run: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    log = serve_and_log(run, drifted(60), tmp_path / "log.jsonl")
    report = monitor(run, log, out_dir=tmp_path / "out", embedder=str(tiny_encoder))
    tests = report["tests"]
    assert tests["embedding"]["drift"] and tests["embedding"]["auc"] > 0.9
    assert tests["length"]["drift"] and tests["length"]["live_median"] > tests["length"]["train_median"]
    assert tests["oov"]["drift"] and tests["oov"]["live_rate"] > 0.3
    assert report["verdict"]["retrain"] and report["verdict"]["line"].startswith("re-train recommended: yes because")
    assert report["serving"]["requests"] == 61 and report["serving"]["client_error_rate"] == pytest.approx(1 / 61)
    saved = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert saved["verdict"] == report["verdict"]
    assert "re-train recommended: yes" in (tmp_path / "out" / "monitor.md").read_text()


def test_same_distribution_sample_is_not_flagged(run: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    # 150 draws from 80 rows: most inputs repeat, as real traffic does, and must not read as drift
    log = serve_and_log(run, same_distribution(150, seed=1), tmp_path / "log.jsonl")
    report = monitor(run, log, out_dir=tmp_path / "out", embedder=str(tiny_encoder))
    flagged = [name for name, t in report["tests"].items() if t["drift"]]
    assert set(report["tests"]) == {"embedding", "length", "labels", "oov"}
    assert flagged == [] and not report["verdict"]["retrain"], report["verdict"]
    assert report["tests"]["oov"]["live_rate"] == 0.0 and report["tests"]["embedding"]["p_value"] > 0.01


def test_label_shift_and_length_tests_match_scipy() -> None:
    from scipy.stats import chi2_contingency, ks_2samp

    th = Thresholds()
    train, live = ["a"] * 50 + ["b"] * 50, ["a"] * 90 + ["b"] * 10
    shifted = label_shift(train, live, th)
    assert shifted["drift"] and shifted["p_value"] == pytest.approx(chi2_contingency([[50, 50], [90, 10]])[1])
    assert not label_shift(train, ["a"] * 26 + ["b"] * 24, th)["drift"]
    rng = random.Random(0)
    a, b = [rng.randint(5, 15) for _ in range(200)], [rng.randint(5, 15) for _ in range(200)]
    res = length_drift(a, b, th)
    assert res["p_value"] == pytest.approx(ks_2samp(a, b).pvalue) and not res["drift"]
    assert length_drift(a, [x + 10 for x in b], th)["drift"]


def test_too_few_live_inputs_give_no_verdict_of_drift(run: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    log = serve_and_log(run, drifted(5), tmp_path / "log.jsonl")
    report = monitor(run, log, out_dir=tmp_path / "out", embedder=str(tiny_encoder))
    assert report["tests"] == {} and not report["verdict"]["retrain"]
    assert "only 5 logged inputs" in report["verdict"]["line"]


def test_bad_log_is_refused_with_the_line(run: Path, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "not a log row"}])
    with pytest.raises(DataError, match="bad.jsonl:1"):
        monitor(run, bad, out_dir=tmp_path / "out")
    with pytest.raises(UserError, match="no such request log"):
        monitor(run, tmp_path / "missing.jsonl", out_dir=tmp_path / "out")


def test_cli_prints_the_verdict(run: Path, tiny_encoder: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    log = serve_and_log(run, drifted(40), tmp_path / "log.jsonl")
    assert main(["monitor", str(run), str(log), "--out", str(tmp_path / "o"), "--embedder", str(tiny_encoder)]) == 0
    out = capsys.readouterr().out
    assert "re-train recommended: yes because" in out and (tmp_path / "o" / "monitor.md").is_file()
