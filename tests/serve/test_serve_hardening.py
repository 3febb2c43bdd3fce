"""Issue 18, the server: each finding replayed against the app on tiny in-process runs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from test_serve import cls_model, cls_run, ext_model, ext_run  # noqa: F401 (module fixtures: tiny trained runs)
from tuneforge.errors import ConfigError, UserError
from tuneforge.serve import serve
from tuneforge.serve.app import create_app
from tuneforge.serve.config import ServeConfig, exposure_warning
from tuneforge.serve.served import ServedModel
from tuneforge.serve.timeouts import FLOOR_S, derive_timeout, read_preflight
from tuneforge.tasks.base import prompt_text

KEY = {"Authorization": "Bearer s3cret"}
JSON = {"content-type": "application/json"}


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> ServeConfig:
    monkeypatch.setenv("TF_HARDEN_KEY", "s3cret")
    return ServeConfig(api_key_env="TF_HARDEN_KEY", batch_wait_ms=0)


async def _stream_to(app: Any, path: str, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> httpx.Response:
    """POST a body as it is generated: no Content-Length, chunked, as a client streaming an upload sends it."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post(path, content=chunks, headers=headers)


# ----------------------------------------------------------------------------- body size
def test_chunked_oversize_body_is_refused_413_as_it_streams_before_auth_or_parsing(
        cls_model: ServedModel, keyed: ServeConfig, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    parsed: list[Any] = []
    monkeypatch.setattr(cls_model, "from_texts", lambda texts: parsed.append(texts))  # the route must never run
    app = create_app(cls_model, keyed)
    chunk = b'{"texts": ["' + b"jane.doe@example.org " * 3120  # 65,520 bytes of personal data per chunk
    pulled = 0

    async def sixty_megabytes() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(60_000_000 // len(chunk)):
            pulled += 1
            yield chunk

    resp = asyncio.run(_stream_to(app, "/v1/classify", sixty_megabytes(), JSON))  # no key sent
    assert resp.status_code == 413, resp.text
    assert pulled <= keyed.max_body_bytes // len(chunk) + 1  # stopped reading at the cap: never 60 MB
    assert len(resp.content) < 300 and b"jane.doe" not in resp.content
    assert resp.json()["request_id"] == resp.headers["x-request-id"]
    assert parsed == []

    with TestClient(create_app(cls_model, keyed)) as client:
        declared = client.post("/v1/classify", content=b"{}", headers={**JSON, "content-length": "60000000"})
        assert declared.status_code == 413  # a declared length over the cap: refused before reading anything
        # under the cap but without the key: 401 before the JSON parser sees a byte of it
        assert client.post("/v1/classify", content=b"{not json", headers=JSON).status_code == 401
        assert client.post("/v1/classify", content=b"{not json", headers={**JSON, **KEY}).status_code == 422


# ----------------------------------------------------------------------------- no echo
def test_validation_errors_name_the_field_and_never_echo_the_input(cls_model: ServedModel) -> None:  # noqa: F811
    secret = "IBAN GB82 WEST 1234 5698 7654 32 belongs to Jane Doe"
    with TestClient(create_app(cls_model)) as client:
        answers = [
            client.post("/v1/classify", json={"texts": [secret, 5], "note": secret}),
            client.post("/v1/classify", json={"texts": secret * (20_000 // len(secret))}),  # wrong type, 20 kB
            client.post("/v1/classify", content=("[" + secret).encode(), headers=JSON),
            client.post("/v1/classify", content=secret.encode(), headers={"content-type": "text/plain"}),
            client.post("/v1/chat/completions", json={"messages": [{"role": secret, "content": secret}]}),
            client.post("/v1/completions", json={"prompt": [secret]}),
            client.post("/v1/classify", json={"texts": ["ok"], secret: 1}),  # an unknown key is input too
        ]
    for resp in answers:
        assert resp.status_code == 422, resp.text
        assert "GB82" not in resp.text and "Jane" not in resp.text and len(resp.content) < 2000
        assert resp.json()["request_id"] == resp.headers["x-request-id"]
    problems = answers[0].json()["error"]["problems"]
    assert {tuple(p["loc"]) for p in problems} == {("body", "texts", 1), ("body", "note")}  # short names: kept
    assert all(set(p) == {"loc", "msg", "type"} for p in problems)  # no "input", no "ctx"


# ----------------------------------------------------------------------------- surrogates
@pytest.mark.parametrize(("path", "raw"), [
    ("/v1/classify", b'{"texts": ["ok", "a\\ud800b"]}'),
    ("/v1/completions", b'{"prompt": "\\udfff"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi \\udc80"}]}'),
    ("/v1/classify", b'{"texts": ["ok"], "\\ud800": 1}'),  # in a key, which the error names
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "model": "\\ud83d"}'),
])
def test_a_lone_surrogate_is_a_4xx_with_a_message(cls_model: ServedModel, path: str, raw: bytes) -> None:  # noqa: F811
    with TestClient(create_app(cls_model)) as client:
        resp = client.post(path, content=raw, headers=JSON)
        ok = client.post("/v1/classify", json={"texts": ["emoji \U0001F600 fine"]})  # a real pair is valid
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"] and resp.headers["x-request-id"]
    assert ok.status_code == 200


def test_surrogate_message_says_what_is_wrong(cls_model: ServedModel) -> None:  # noqa: F811
    with TestClient(create_app(cls_model)) as client:
        answer = client.post("/v1/classify", content=b'{"texts": ["a\\ud800"]}', headers=JSON).json()
    detail = answer["error"]["problems"]
    assert detail[0]["loc"] == ["body", "texts", 0] and "lone surrogate (U+D800) at character 1" in detail[0]["msg"]


# ----------------------------------------------------------------------------- 5xx: request id, logged
def test_every_5xx_carries_a_request_id_that_is_in_the_log(cls_model: ServedModel, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    def boom(examples: list[Any]) -> list[Any]:
        raise RuntimeError("boom: a bug in the model code")

    monkeypatch.setattr(cls_model, "predict", boom)
    with caplog.at_level(logging.INFO, logger="tuneforge.serve"), TestClient(create_app(cls_model)) as client:
        crash = client.post("/v1/classify", json={"texts": ["a"]})
        mine = client.post("/v1/classify", json={"texts": ["a"]}, headers={"X-Request-ID": "trace-42"})
        forged = client.post("/v1/classify", json={"texts": ["a"]}, headers={"X-Request-ID": b"x\xff;" * 40})
        metrics = client.get("/metrics").text
    rid = crash.headers["x-request-id"]
    assert crash.status_code == 500 and crash.json()["request_id"] == rid
    assert "boom" not in crash.text and "Traceback" not in crash.text  # the log has it, the client does not
    logged = [r for r in caplog.records if rid in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "boom" in str(logged[0].exc_info[1])
    assert mine.headers["x-request-id"] == "trace-42" and any("trace-42" in r.getMessage() for r in caplog.records)
    assert len(forged.headers["x-request-id"]) == 32  # an id unfit to log or echo is replaced by a fresh one
    assert 'tuneforge_requests_total{endpoint="/v1/classify",status="500"} 3.0' in metrics


def test_a_504_is_logged_with_its_request_id(cls_model: ServedModel, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    inner = cls_model.predict
    monkeypatch.setattr(cls_model, "predict", lambda xs: (time.sleep(0.3), inner(xs))[1])
    with caplog.at_level(logging.INFO, logger="tuneforge.serve"), \
            TestClient(create_app(cls_model, ServeConfig(timeout=0.05, batch_wait_ms=0))) as client:
        resp = client.post("/v1/classify", json={"texts": ["a"]})
    rid = resp.headers["x-request-id"]
    assert resp.status_code == 504 and resp.json()["request_id"] == rid
    assert any(rid in r.getMessage() and "504" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- what answers without a key
def test_health_is_minimal_and_metrics_and_docs_need_the_key(cls_model: ServedModel, keyed: ServeConfig) -> None:  # noqa: F811
    with TestClient(create_app(cls_model, keyed)) as client:
        health = client.get("/health")
        closed = {p: client.get(p).status_code for p in ("/metrics", "/openapi.json", "/docs", "/redoc", "/nope")}
        opened = {p: client.get(p, headers=KEY).status_code for p in ("/metrics", "/openapi.json", "/docs")}
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert set(closed.values()) == {401} and set(opened.values()) == {200}
    public = keyed.model_copy(update={"public_metrics": True})
    with TestClient(create_app(cls_model, public)) as client:
        assert client.get("/metrics").status_code == 200 and client.get("/openapi.json").status_code == 200
        assert client.post("/v1/classify", json={"texts": ["a"]}).status_code == 401  # the model still needs it


# ----------------------------------------------------------------------------- binding beyond loopback
def test_a_keyless_server_beyond_loopback_is_refused_unless_insecure_then_warned(
        cls_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from tuneforge.cli import main

    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert exposure_warning(ServeConfig(host=host)) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "myhost.example"):
        with pytest.raises(ConfigError, match="--insecure-no-key"):
            exposure_warning(ServeConfig(host=host))
    assert exposure_warning(ServeConfig(host="0.0.0.0", api_key_env="K")) is None
    assert main(["serve", str(cls_run), "--host", "0.0.0.0"]) == 2
    assert "anyone could use it" in capsys.readouterr().err

    started: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(kw))
    serve(cls_run, ServeConfig(host="0.0.0.0", insecure_no_key=True))
    assert started and started[0]["host"] == "0.0.0.0"
    assert "WITHOUT AN API KEY" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the request log
def test_request_log_is_0600_and_redacts_iban_card_pin_password_name_email(cls_model: ServedModel,  # noqa: F811
                                                                              tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    text = ("Hi, my name is Jane Doe. IBAN GB82 WEST 1234 5698 7654 32, card 4111 1111 1111 1111, "
            "pin 4321, password: hunter2, api_key=sk-live-abc123, mail jane.doe@example.org")
    with TestClient(create_app(cls_model, ServeConfig(log_requests=log, batch_wait_ms=0))) as client:
        assert client.post("/v1/classify", json={"texts": [text]}).status_code == 200
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    logged = log.read_text(encoding="utf-8")
    for leaked in ("Jane", "GB82", "4111", "4321", "hunter2", "sk-live", "jane.doe"):
        assert leaked not in logged
    assert json.loads(logged)["inputs"] == [
        "Hi, my name is [NAME]. IBAN [IBAN], card [CARD], pin [SECRET], password: [SECRET], api_key=[SECRET], "
        "mail [EMAIL]"]


def test_request_log_narrows_an_open_file_and_refuses_a_symlink(cls_model: ServedModel, tmp_path: Path) -> None:  # noqa: F811
    wide = tmp_path / "wide.jsonl"
    wide.write_text("")
    os.chmod(wide, 0o644)
    create_app(cls_model, ServeConfig(log_requests=wide))
    assert stat.S_IMODE(wide.stat().st_mode) == 0o600
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    (tmp_path / "link.jsonl").symlink_to(target)
    with pytest.raises(UserError, match="cannot write the request log"):
        create_app(cls_model, ServeConfig(log_requests=tmp_path / "link.jsonl"))


# ----------------------------------------------------------------------------- usage counts
def test_prompt_tokens_count_the_templated_prompt(ext_model: ServedModel, cls_model: ServedModel) -> None:  # noqa: F811
    prompt = "Acme red mug size 2"
    with TestClient(create_app(ext_model, ServeConfig(batch_wait_ms=0))) as client:
        usage = client.post("/v1/completions", json={"prompt": prompt}).json()["usage"]
    tok = ext_model.tokenizer
    templated = prompt_text(tok, ext_model.task.prompt_messages(ext_model.from_prompt(prompt)))
    assert usage["prompt_tokens"] == len(tok(templated, add_special_tokens=False)["input_ids"])
    assert usage["prompt_tokens"] > ext_model.count_tokens(prompt)  # the instruction and chat markup count too

    with TestClient(create_app(cls_model, ServeConfig(batch_wait_ms=0))) as client:
        usage = client.post("/v1/completions", json={"prompt": prompt}).json()["usage"]
    assert usage["prompt_tokens"] == len(cls_model.tokenizer(prompt)["input_ids"])  # the encoder's [CLS] ... [SEP]


# ----------------------------------------------------------------------------- timeout
def test_timeout_follows_the_preflights_measured_latency(ext_model: ServedModel, ext_run: Path,  # noqa: F811
                                                         tmp_path: Path) -> None:
    slow = {"device": "cpu", "throughput_tokens_per_s": 100.0, "data": {"rows": 10, "tokens": 100}}  # 0.1 s a row
    derived = derive_timeout(slow, forwards_per_item=9, queue_size=256, max_batch=16, device="cpu")
    assert derived.seconds == pytest.approx(0.1 * 9 * 272 * 2)  # 489.6 s: a loaded queue of slow answers
    assert derive_timeout(slow, forwards_per_item=9, queue_size=256, max_batch=16, device="cuda").seconds == 3600
    assert derive_timeout(None, forwards_per_item=9, queue_size=256, max_batch=16, device="cpu").seconds == FLOOR_S
    assert derive_timeout({"throughput_tokens_per_s": float("nan")}, forwards_per_item=1, queue_size=1, max_batch=1,
                          device="cpu").seconds == FLOOR_S

    own = create_app(ext_model).state.timeout  # the tiny run is fast: its measured latency is under the floor
    assert own.seconds == FLOOR_S and "preflight.json" in own.why and read_preflight(ext_run) is not None

    (tmp_path / "preflight.json").write_text(json.dumps(slow))
    slow_model = ServedModel(ext_model.loaded, "slow", tmp_path)
    forwards = 1 + ext_model.task.settings.eval.max_new_tokens
    assert slow_model.forwards_per_item == forwards
    assert create_app(slow_model).state.timeout.seconds == pytest.approx(0.1 * forwards * 272 * 2)
    assert create_app(slow_model, ServeConfig(timeout=7)).state.timeout.seconds == 7  # the user's flag wins


def test_redaction_detectors_mask_cued_secrets_and_names_and_keep_ordinary_text() -> None:
    from tuneforge.serve.redact import redact, redact_text

    redacted = redact_text("Dear Mr. Smith, my PIN is 9876; token: abc")
    assert redacted == "Dear Mr. [NAME], my PIN is [SECRET]; token: [SECRET]"
    assert redact_text("send it to DE89370400440532013000") == "send it to [IBAN]"
    for clean in ("I forgot my password yesterday", "the pin of the map", "this is great", "size 42, pack of 12"):
        assert redact_text(clean) == clean
    assert redact({"fields": {"name": "Ann Lee", "password": "x", "colour": "red"}}) == {
        "fields": {"name": "[NAME]", "password": "[SECRET]", "colour": "red"}}


def test_a_content_length_that_is_not_a_number_is_a_400(cls_model: ServedModel) -> None:  # noqa: F811
    with TestClient(create_app(cls_model)) as client:
        resp = client.post("/v1/classify", content=b'{"texts": ["a"]}', headers={**JSON, "content-length": "12x"})
    assert resp.status_code == 400 and resp.json()["request_id"]
