"""Property-based fuzzing of the HTTP app (issue 18): whatever a client sends, the answer is below 500,
carries a request id, and never quotes a long piece of the request back.

Deterministic (``derandomize=True``, no example database) and small, on the tiny served runs of
``test_serve.py``: generated JSON bodies shaped like the endpoints' own and free-form, random
bytes under random content types, random Unicode (lone surrogates included) as raw and as JSON,
and random headers (keys, content lengths, request ids, content types).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_serve import cls_model, cls_run, ext_model, ext_run  # noqa: F401 (module fixtures: tiny trained runs)
from tuneforge.serve.app import create_app
from tuneforge.serve.config import ServeConfig
from tuneforge.serve.served import ServedModel

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PATHS = ["/v1/classify", "/v1/extract", "/v1/chat/completions", "/v1/completions", "/health", "/metrics",
         "/openapi.json", "/v1/", "/nope"]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]

chars = st.one_of(st.characters(exclude_categories=[]), st.sampled_from(SURROGATES))
texts = st.text(chars, max_size=48)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12)
shaped = st.one_of(
    st.fixed_dictionaries({"texts": st.lists(texts, max_size=4)}, optional={"extra": json_values}),
    st.fixed_dictionaries({"prompt": texts}, optional={
        "max_tokens": st.integers(-3, 5000), "stream": st.booleans(), "temperature": st.floats(),
        "model": json_values}),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries({
        "role": st.sampled_from(["user", "assistant", "system", "robot"]), "content": json_values | texts}),
        max_size=3)}, optional={"stream": st.booleans(), "max_tokens": json_values}),
    json_values,
)
header_bytes = st.binary(max_size=40).filter(lambda b: not set(b) & {0, 10, 13})
content_types = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/vnd.api+json; charset=utf-16",
                                 "application/json; charset=\x7f", ""])


@pytest.fixture(scope="module")
def client(cls_model: ServedModel, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
           monkeypatch_module: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch_module.setenv("TF_FUZZ_KEY", KEY)
    log = tmp_path_factory.mktemp("fuzz") / "requests.jsonl"
    cfg = ServeConfig(api_key_env="TF_FUZZ_KEY", batch_wait_ms=0, max_body_bytes=32_768, log_requests=log)
    with TestClient(create_app(cls_model, cfg)) as c:
        c.log_path = log  # type: ignore[attr-defined]
        yield c


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def long_strings(value: Any) -> list[str]:
    """The distinctive strings in a request (24+ characters, not one repeated run), which no answer may quote."""
    if isinstance(value, str):
        return [value] if len(value) >= 24 and len(set(value)) >= 6 else []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in long_strings(k) + long_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in long_strings(v)]
    return []


def check(resp: Any, submitted: list[str]) -> None:
    assert resp.status_code < 500, resp.text[:500]
    assert resp.headers.get("x-request-id")
    for s in submitted:
        for form in (s, json.dumps(s)[1:-1]):  # raw, or as a JSON string would spell it
            assert form not in resp.text, f"the answer quotes the input {form[:60]!r}"


@FUZZ
@given(body=shaped, path=st.sampled_from(PATHS), authorised=st.booleans())
def test_generated_json_bodies_never_5xx_nor_echo(client: TestClient, body: Any, path: str, authorised: bool) -> None:
    raw = json.dumps(body, ensure_ascii=True).encode()  # lone surrogates travel as \\udXXX escapes
    resp = client.post(path, content=raw, headers={"content-type": "application/json", **(AUTH if authorised else {})})
    check(resp, long_strings(body))


@FUZZ
@given(keys=st.dictionaries(st.text(chars, min_size=24, max_size=60), json_values, min_size=1, max_size=3),
       shape=st.sampled_from([{"texts": ["a fine text"]}, {"prompt": "a prompt"}, {}]),
       path=st.sampled_from(PATHS[:4]))
def test_unknown_long_keys_are_never_echoed(client: TestClient, keys: dict[str, Any], shape: dict[str, Any],
                                            path: str) -> None:
    body = {**shape, **keys}
    raw = json.dumps(body, ensure_ascii=True).encode()
    check(client.post(path, content=raw, headers={"content-type": "application/json", **AUTH}), long_strings(body))


@FUZZ
@given(raw=st.binary(max_size=400), path=st.sampled_from(PATHS), ctype=content_types,
       method=st.sampled_from(["POST", "PUT", "GET", "DELETE", "PATCH"]))
def test_random_bytes_never_5xx(client: TestClient, raw: bytes, path: str, ctype: str, method: str) -> None:
    resp = client.request(method, path, content=raw, headers={"content-type": ctype, **AUTH})
    check(resp, [])


@FUZZ
@given(text=st.text(chars, min_size=1, max_size=80), path=st.sampled_from(PATHS[:4]),
       template=st.sampled_from(['{"texts": ["%s"]}', '{"prompt": "%s"}', '%s',
                                 '{"messages": [{"role": "user", "content": "%s"}]}']))
def test_random_unicode_with_surrogates_never_5xx_nor_echo(client: TestClient, text: str, path: str,
                                                           template: str) -> None:
    raw = (template % text).encode("utf-8", "surrogatepass")  # surrogates as (invalid) UTF-8 bytes
    resp = client.post(path, content=raw, headers={"content-type": "application/json", **AUTH})
    check(resp, long_strings(text))
    escaped = (template % json.dumps(text)[1:-1]).encode()  # and as JSON escapes
    check(client.post(path, content=escaped, headers={"content-type": "application/json", **AUTH}), long_strings(text))


@FUZZ
@given(auth=st.one_of(st.just(AUTH["Authorization"].encode()), header_bytes,
                      header_bytes.map(lambda b: b"Bearer " + b)),
       length=st.one_of(st.none(), st.from_regex(r"\A[0-9]{1,12}\Z"), header_bytes),
       rid=st.one_of(st.none(), header_bytes), ctype=st.one_of(content_types.map(str.encode), header_bytes),
       extra=st.dictionaries(st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z"), header_bytes, max_size=3),
       path=st.sampled_from(PATHS))
def test_random_headers_never_5xx(client: TestClient, auth: bytes, length: Any, rid: bytes | None, ctype: bytes,
                                  extra: dict[str, bytes], path: str) -> None:
    headers: dict[str, Any] = {**extra, "authorization": auth, "content-type": ctype}
    if length is not None:
        headers["content-length"] = length
    if rid is not None:
        headers["x-request-id"] = rid
    resp = client.post(path, content=b'{"texts": ["a fine text"]}', headers=headers)
    check(resp, [])


@pytest.fixture(scope="module")
def ext_client(ext_model: ServedModel) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(ext_model, ServeConfig(batch_wait_ms=0))) as c:
        yield c


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(body=shaped, path=st.sampled_from(PATHS[1:4]))
def test_generating_run_never_5xx(ext_client: TestClient, body: Any, path: str) -> None:
    resp = ext_client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert resp.status_code < 500, resp.text[:500]  # its answers may quote the input (it extracts): no echo check


def test_the_request_log_stays_valid_jsonl(client: TestClient) -> None:
    for raw in (b'{"texts": ["fine"]}', b'{"texts": ["\\ud800"]}',
                '{"texts": ["\ud800"]}'.encode("utf-8", "surrogatepass"),
                b"\xff\xfe garbage"):
        client.post("/v1/classify", content=raw, headers={"content-type": "application/json", **AUTH})
    path: Path = client.log_path  # type: ignore[attr-defined]
    rows = [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]  # strict UTF-8
    assert len(rows) >= 4 and all(r["status"] < 500 for r in rows)
