"""``POST /v1/feedback`` on a tiny served run: ids in the log, strict small bodies, the key, the same redaction;
and the log plus its feedback turned into preference data that the preference task reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import base_recipe, chat_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.data.feedback import parse_all
from tuneforge.data.readers import Record
from tuneforge.serve.app import create_app
from tuneforge.serve.config import ServeConfig
from tuneforge.serve.feedback import feedback_path
from tuneforge.serve.served import ServedModel


@pytest.fixture(scope="module")
def gen_model(tmp_path_factory: pytest.TempPathFactory, tiny_decoder: Path) -> ServedModel:
    tmp = tmp_path_factory.mktemp("serve-gen")
    recipe = base_recipe(tiny_decoder, "generation", write_jsonl(tmp / "train.jsonl", chat_rows(12)), tmp / "run",
                         epochs=1)
    recipe["eval"] = {"base": False, "max_new_tokens": 6, "batch_size": 4}
    return ServedModel.from_run(api.train(recipe, echo=lambda *_: None).run_dir)


def ask(client: TestClient, text: str, **headers: str) -> str:
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}]},
                       headers=headers)
    assert resp.status_code == 200
    return resp.json()["id"]


def test_feedback_is_stored_beside_the_log_and_becomes_preference_data(gen_model: ServedModel, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_FEEDBACK_KEY", "k3y")
    log = tmp_path / "requests.jsonl"
    auth = {"Authorization": "Bearer k3y"}
    with TestClient(create_app(gen_model, ServeConfig(log_requests=log, api_key_env="TF_FEEDBACK_KEY",
                                                      max_text_chars=200))) as client:
        first, second, third = (ask(client, t, **auth) for t in ("say red", "say blue", "say blue"))
        assert client.post("/v1/feedback", json={"id": first, "rating": "bad"}).status_code == 401
        ok = client.post("/v1/feedback", headers=auth, json={
            "id": first, "rating": "bad", "preferred": "red it is, mail jane.doe@example.org"})
        assert ok.status_code == 200 and ok.json() == {"id": first, "stored": True}
        assert client.post("/v1/feedback", headers=auth, json={"id": second, "rating": "good"}).status_code == 200
        assert client.post("/v1/feedback", headers=auth, json={"id": third, "rating": "bad"}).status_code == 200
        for bad in ({"id": first}, {"id": first, "rating": "meh"}, {"id": "no spaces!", "rating": "good"},
                    {"id": first, "rating": "good", "extra": 1}, {"id": first, "preferred": "x" * 201}):
            assert client.post("/v1/feedback", headers=auth, json=bad).status_code == 422, bad
    stored = feedback_path(log)
    assert stored.name == "requests.feedback.jsonl" and oct(stored.stat().st_mode & 0o777) == "0o600"
    assert "jane.doe" not in stored.read_text() and "[EMAIL]" in stored.read_text()
    logged = [json.loads(line) for line in log.read_text().splitlines() if '"id"' in line]
    assert [r["id"] for r in logged] == [first, second, third]

    out = tmp_path / "pairs.jsonl"
    assert main(["data", "feedback", str(log), "-o", str(out)]) == 0
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert pairs[0]["chosen"] == "red it is, mail [EMAIL]" and pairs[0]["prompt"] == "say red"
    assert pairs[0]["rejected"] == logged[0]["outputs"][0]
    records = [Record("pairs.jsonl", i + 1, p) for i, p in enumerate(pairs)]
    assert all(fb.kind == "pair" for _, fb in parse_all(records, "pairs", prompt_field="prompt",
                                                       completion_field="completion", label_field="label"))
    binary = tmp_path / "binary.jsonl"
    assert main(["data", "feedback", str(log), "-o", str(binary), "--kind", "binary"]) == 0
    labels = [json.loads(line)["label"] for line in binary.read_text().splitlines()]
    assert labels == ["good", "bad", "good", "bad"]  # preferred + served for the first; the two rated answers


def test_a_server_without_a_log_refuses_feedback(gen_model: ServedModel) -> None:
    with TestClient(create_app(gen_model)) as client:
        resp = client.post("/v1/feedback", json={"id": "chatcmpl-1", "rating": "good"})
    assert resp.status_code == 409 and "--log-requests" in resp.text
