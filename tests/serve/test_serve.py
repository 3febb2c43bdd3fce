"""The HTTP server on tiny in-process runs: answers equal offline predict, auth, validation, batching, limits."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import base_recipe, product_rows, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.errors import ConfigError
from tuneforge.serve.app import create_app
from tuneforge.serve.batching import Batcher
from tuneforge.serve.config import ServeConfig
from tuneforge.serve.redact import luhn_ok, redact, redact_text
from tuneforge.serve.served import ServedModel

QUIET = {"echo": lambda *_: None}


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    tmp = tmp_path_factory.mktemp("serve-cls")
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(60))
    # trained until it separates the two labels, so a mix-up of answers between requests would show
    recipe = base_recipe(tiny_encoder, "classification", train, tmp / "run", epochs=4, lr=3e-3)
    recipe["eval"]["base"] = False
    return api.train(recipe, **QUIET).run_dir


@pytest.fixture(scope="module")
def ext_run(tmp_path_factory: pytest.TempPathFactory, tiny_decoder: Path) -> Path:
    tmp = tmp_path_factory.mktemp("serve-ext")
    train = write_jsonl(tmp / "train.jsonl", product_rows(20))
    recipe = base_recipe(tiny_decoder, "extraction", train, tmp / "run", epochs=3)  # answers non-empty
    recipe["method"] = {"name": "lora", "r": 4, "alpha": 8}
    recipe["eval"] = {"base": False, "max_new_tokens": 8, "batch_size": 4}
    return api.train(recipe, **QUIET).run_dir


@pytest.fixture(scope="module")
def cls_model(cls_run: Path) -> ServedModel:
    return ServedModel.from_run(cls_run)


@pytest.fixture(scope="module")
def ext_model(ext_run: Path) -> ServedModel:
    return ServedModel.from_run(ext_run)


def offline(run: Path, texts: list[str], tmp: Path) -> list[dict[str, Any]]:
    out = api.predict(run, write_jsonl(tmp / "in.jsonl", [{"text": t} for t in texts]), tmp / "out.jsonl")
    return [json.loads(line) for line in out.read_text().splitlines()]


TEXTS = [f"the {c} lamp is {w} item {i}" for i, (c, w) in
         enumerate(zip(["red", "blue", "green", "black"] * 3,
                       ["great", "awful", "lovely", "broken", "poor", "superb"] * 2))]


# ----------------------------------------------------------------------------- endpoints
def test_classify_equals_offline_predict(cls_run: Path, cls_model: ServedModel, tmp_path: Path) -> None:
    with TestClient(create_app(cls_model)) as client:
        body = client.post("/v1/classify", json={"texts": TEXTS}).json()
        assert client.post("/v1/extract", json={"texts": ["x"]}).status_code == 404  # not this run's task
        health = client.get("/health").json()
    assert health == {"status": "ok"}  # liveness only: no run, model or load details without a key
    ref = offline(cls_run, TEXTS, tmp_path)
    assert [r["label"] for r in body["results"]] == [r["prediction"] for r in ref]
    for got, want in zip(body["results"], ref):
        assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
        assert set(got["probabilities"]) == {"pos", "neg"}


def test_extract_and_openai_endpoints_equal_offline_predict(ext_run: Path, ext_model: ServedModel,
                                                            tmp_path: Path) -> None:
    texts = ["Acme red mug size 2", "Acme blue mug size 3"]
    ref = offline(ext_run, texts, tmp_path)
    with TestClient(create_app(ext_model)) as client:
        extracted = client.post("/v1/extract", json={"texts": texts}).json()["results"]
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": texts[0]}]}).json()
        completion = client.post("/v1/completions", json={"prompt": texts[1], "temperature": 0}).json()
        short = client.post("/v1/completions", json={"prompt": texts[1], "max_tokens": 1}).json()
        assert client.post("/v1/classify", json={"texts": texts}).status_code == 404
    assert [e["fields"] for e in extracted] == [r["prediction"] for r in ref]
    raws = [e["raw"] for e in extracted]
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["content"] == raws[0]
    assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + chat["usage"]["completion_tokens"]
    assert completion["choices"][0]["text"] == raws[1]
    assert short["usage"]["completion_tokens"] <= 1 and raws[1].startswith(short["choices"][0]["text"])


def sse_events(text: str) -> list[Any]:
    events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streaming_is_openai_server_sent_events(ext_model: ServedModel) -> None:
    messages = [{"role": "user", "content": "Acme green mug size 1"}]
    with TestClient(create_app(ext_model)) as client:
        whole = client.post("/v1/chat/completions", json={"messages": messages}).json()
        with client.stream("POST", "/v1/chat/completions", json={"messages": messages, "stream": True}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            chunks = sse_events(resp.read().decode())
        comp = sse_events(client.post("/v1/completions", json={"prompt": "Acme green mug size 1", "stream": True}).text)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == whole["choices"][0]["message"]["content"]
    assert "".join(c["choices"][0]["text"] for c in comp) == content


# ----------------------------------------------------------------------------- auth and validation
def test_api_key_is_required_when_configured(cls_model: ServedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_TEST_KEY", "s3cret")
    with TestClient(create_app(cls_model, ServeConfig(api_key_env="TF_TEST_KEY"))) as client:
        assert client.post("/v1/classify", json={"texts": ["a"]}).status_code == 401
        wrong = client.post("/v1/classify", json={"texts": ["a"]}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "s3cret" not in wrong.text
        assert client.post("/v1/classify", json={"texts": ["a"]},
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200  # liveness probes need no key
        assert client.get("/openapi.json").status_code == 401  # the document too, unless public_metrics
        schema = client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
        assert "HTTPBearer" in json.dumps(schema["components"])
    monkeypatch.delenv("TF_TEST_KEY")
    with pytest.raises(ConfigError, match="TF_TEST_KEY"):
        create_app(cls_model, ServeConfig(api_key_env="TF_TEST_KEY"))


@pytest.mark.parametrize("body", [
    {"texts": []},                               # empty batch
    {"texts": ["a"] * 33},                       # batch over the limit
    {"texts": ["x" * 4001]},                     # text over the limit
    {"texts": ["   "]},                          # blank
    {"texts": ["ok"], "extra": 1},               # unknown field
    {"texts": "not a list"},                     # wrong type
    {},                                          # missing field
])
def test_bad_bodies_get_422_naming_the_field(cls_model: ServedModel, body: dict[str, Any]) -> None:
    with TestClient(create_app(cls_model)) as client:
        resp = client.post("/v1/classify", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error" and resp.json()["error"]["problems"]


def test_limits_are_per_server_and_in_the_openapi_document(cls_model: ServedModel, ext_model: ServedModel) -> None:
    with TestClient(create_app(cls_model, ServeConfig(max_items=2, max_text_chars=10))) as client:
        assert client.post("/v1/classify", json={"texts": ["a", "b"]}).status_code == 200
        assert client.post("/v1/classify", json={"texts": ["a", "b", "c"]}).status_code == 422
        assert client.post("/v1/classify", json={"texts": ["x" * 11]}).status_code == 422
        texts = client.get("/openapi.json").json()["components"]["schemas"]["TextsRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 2 and texts["items"]["maxLength"] == 10
    with TestClient(create_app(ext_model, ServeConfig(max_input_tokens=20))) as client:
        resp = client.post("/v1/extract", json={"texts": ["Acme red mug size 2 " * 5]})
    assert resp.status_code == 422 and "at most 20" in resp.json()["error"]["message"]


def test_malformed_and_oversized_requests_are_refused(cls_model: ServedModel) -> None:
    with TestClient(create_app(cls_model)) as client:
        assert client.post("/v1/classify", content=b"{not json",
                           headers={"content-type": "application/json"}).status_code == 422
        big = json.dumps({"texts": ["word " * 700] * 400}).encode()
        assert client.post("/v1/classify", content=big, headers={"content-type": "application/json"}).status_code == 413
        assert client.post("/v1/chat/completions",
                           json={"messages": [{"role": "robot", "content": "x"}]}).status_code == 422
        last_is_assistant = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
        resp = client.post("/v1/chat/completions", json=last_is_assistant)
        assert resp.status_code == 422 and "last message" in resp.json()["error"]["message"]


# ----------------------------------------------------------------------------- batching, queue, timeout
def test_batcher_routes_each_job_its_own_outputs_under_concurrency() -> None:
    sizes: list[int] = []

    def predict(items: list[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.002)
        return [x * 10 for x in items]

    async def main() -> list[tuple[list[int], list[int]]]:
        batcher: Batcher[int, int] = Batcher(predict, max_batch=8, batch_wait_ms=20, queue_size=500)
        batcher.start()
        rng = random.Random(0)
        jobs = [[rng.randrange(10_000) for _ in range(rng.randint(1, 3))] for _ in range(200)]

        async def one(items: list[int]) -> tuple[list[int], list[int]]:
            await asyncio.sleep(rng.random() * 0.01)
            return items, await batcher.submit(items, timeout=10)

        out = await asyncio.gather(*(one(j) for j in jobs))
        batcher.stop()
        return out

    for items, outputs in asyncio.run(main()):
        assert outputs == [x * 10 for x in items]
    assert max(sizes) > 1 and max(sizes) <= 8  # requests really shared batches, never over the cap


def test_concurrent_http_requests_never_mix_outputs(cls_model: ServedModel, cls_run: Path, tmp_path: Path) -> None:
    texts = [f"the {c} lamp is {w} item {i}" for i in range(48)
             for c, w in [(["red", "blue"][i % 2], ["great", "awful", "lovely", "broken"][i % 4])]]
    ref = {t: r["prediction"] for t, r in zip(texts, offline(cls_run, texts, tmp_path))}
    app = create_app(cls_model, ServeConfig(max_batch=8, batch_wait_ms=30))

    async def main() -> list[tuple[str, str]]:
        app.state.batcher.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async def one(t: str) -> tuple[str, str]:
                resp = await client.post("/v1/classify", json={"texts": [t]})
                return t, resp.json()["results"][0]["label"]
            got = await asyncio.gather(*(one(t) for t in texts))
            metrics = (await client.get("/metrics")).text
        app.state.batcher.stop()
        return got, metrics

    got, metrics = asyncio.run(main())
    assert all(label == ref[t] for t, label in got)
    assert len({label for _, label in got}) == 2  # both labels occur: a mix-up could not hide
    assert 'tuneforge_batch_size_bucket{le="1.0"}' in metrics
    singles = float(metrics.split('tuneforge_batch_size_bucket{le="1.0"} ')[1].split()[0])
    batches = float(metrics.split("tuneforge_batch_size_count ")[1].split()[0])
    assert batches < len(texts) and singles < batches + 1  # fewer model calls than requests: batched


class Gate:
    """A predict that blocks until released, to fill the queue deterministically."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def __call__(self, examples: list[Any]) -> list[Any]:
        self.entered.set()
        self.release.wait(10)
        return self.inner(examples)


def test_full_queue_answers_503_and_slow_answers_504(cls_model: ServedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(cls_model.predict)
    monkeypatch.setattr(cls_model, "predict", gate)
    app = create_app(cls_model, ServeConfig(max_batch=1, batch_wait_ms=0, queue_size=1, timeout=5))

    async def main() -> tuple[int, int, int, str]:
        app.state.batcher.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            first = asyncio.create_task(client.post("/v1/classify", json={"texts": ["a"]}))
            while not gate.entered.is_set():  # the worker holds the first request
                await asyncio.sleep(0.005)
            second = asyncio.create_task(client.post("/v1/classify", json={"texts": ["b"]}))
            while app.state.batcher.depth < 1:  # the second waits in the queue
                await asyncio.sleep(0.005)
            third = await client.post("/v1/classify", json={"texts": ["c"]})
            gate.release.set()
            codes = ((await first).status_code, (await second).status_code, third.status_code)
            metrics = (await client.get("/metrics")).text
        app.state.batcher.stop()
        return (*codes, metrics)

    first, second, third, metrics = asyncio.run(main())
    assert (first, second, third) == (200, 200, 503)
    assert 'tuneforge_errors_total{endpoint="/v1/classify",kind="overloaded"} 1.0' in metrics

    slow = Gate(gate.inner)
    monkeypatch.setattr(cls_model, "predict", slow)
    with TestClient(create_app(cls_model, ServeConfig(timeout=0.2))) as client:
        resp = client.post("/v1/classify", json={"texts": ["a"]})
        slow.release.set()
    assert resp.status_code == 504 and "0.2" in resp.json()["error"]["message"]


# ----------------------------------------------------------------------------- metrics and request log
def test_metrics_count_requests_latency_tokens_and_errors(ext_model: ServedModel) -> None:
    with TestClient(create_app(ext_model)) as client:
        raw = client.post("/v1/extract", json={"texts": ["Acme red mug size 1"]}).json()["results"][0]["raw"]
        client.post("/v1/extract", json={"texts": []})
        text = client.get("/metrics").text
    assert 'tuneforge_requests_total{endpoint="/v1/extract",status="200"} 1.0' in text
    assert 'tuneforge_request_latency_seconds_count{endpoint="/v1/extract"} 2.0' in text
    assert 'tuneforge_errors_total{endpoint="/v1/extract",kind="client"} 1.0' in text
    generated = float(text.split("\ntuneforge_generated_tokens_total ")[1].split()[0])
    assert generated == ext_model.count_tokens(raw) > 0
    assert float(text.split("\ntuneforge_generated_tokens_per_second ")[1].split()[0]) > 0


def test_request_log_is_opt_in_and_redacted(cls_model: ServedModel, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with TestClient(create_app(cls_model, ServeConfig(log_requests=log))) as client:
        client.post("/v1/classify", json={"texts": ["great lamp, mail jane.doe@example.org or +44 20 7946 0958"]})
        client.post("/v1/classify", json={"texts": []})
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in rows] == [200, 422]
    assert rows[0]["inputs"] == ["great lamp, mail [EMAIL] or [PHONE]"]
    assert rows[0]["outputs"][0] in {"pos", "neg"} and rows[0]["latency_s"] > 0
    assert "jane.doe" not in log.read_text()


def test_redaction_masks_personal_data_and_keeps_ordinary_numbers() -> None:
    assert redact_text("card 4111 1111 1111 1111, call (555) 123-4567") == "card [CARD], call [PHONE]"
    assert redact_text("write to a.b+c@mail.co.uk") == "write to [EMAIL]"
    for clean in ("book a table for 4 at 7 pm", "play track 3 of 12 from 2019", "size 42 mug"):
        assert redact_text(clean) == clean
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert redact({"a": ["x@y.io", 3]}) == {"a": ["[EMAIL]", 3]}


def test_cli_serve_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tuneforge.cli import main

    assert main(["serve", str(tmp_path)]) == 2
    assert "not a finished tuneforge run" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2


def test_models_lists_the_served_run_in_openai_shape(ext_model: ServedModel) -> None:
    with TestClient(create_app(ext_model)) as client:
        body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [(ext_model.name, "model", "tuneforge")]
    assert isinstance(body["data"][0]["created"], int)
