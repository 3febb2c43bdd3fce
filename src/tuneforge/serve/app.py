"""The HTTP application: FastAPI routes over one ``ServedModel`` and one ``Batcher``.

Routes: ``/v1/chat/completions`` and ``/v1/completions`` (OpenAI-compatible, ``stream`` as
server-sent events), ``/v1/classify`` or ``/v1/extract`` (whichever the run's task is),
``/health`` and ``/metrics`` (Prometheus). FastAPI writes the OpenAPI document at
``/openapi.json`` from the same pydantic models that validate the requests.

Status codes a client can act on: 401 missing or wrong API key, 413 body too large, 422 invalid
input (the message names the field), 503 queue full (retry later), 504 the answer took longer
than the server's timeout.
"""

# no ``from __future__ import annotations`` here: FastAPI reads the route signatures at runtime,
# and the request models are local to ``create_app`` (built for the server's limits)
import asyncio
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from tuneforge.errors import UserError
from tuneforge.serve.batching import Batcher, BatchStats, QueueFull
from tuneforge.serve.config import ServeConfig, resolve_api_key
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.redact import redact
from tuneforge.serve.schemas import (
    MAX_BODY_BYTES, ChatChoice, ChatMessage, ChatResponse, Classified, ClassifyResponse, CompletionChoice,
    CompletionResponse, ErrorBody, Extracted, ExtractResponse, Health, Usage, request_models,
)
from tuneforge.serve.served import TASK_ENDPOINT, Answer, ServedModel
from tuneforge.tasks.base import Example

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    413: {"model": ErrorBody, "description": "request body too large"},
    503: {"model": ErrorBody, "description": "the queue is full; retry later"},
    504: {"model": ErrorBody, "description": "no answer within the server's timeout"},
}
Predict = Callable[[list[Example]], Awaitable[list[dict[str, Any]]]]  # validated, batched, timed-out prediction
SSE = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or server-sent events when stream is true"}}


class RequestLog:
    """Opt-in JSONL log of requests: one line per /v1 request, inputs and outputs redacted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(redact(row), ensure_ascii=False, default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:  # one whole line per write
            fh.write(line)


def create_app(served: ServedModel, cfg: ServeConfig | None = None) -> FastAPI:
    """The application for one served run; the batcher starts and stops with the app's lifespan."""
    cfg = cfg or ServeConfig()
    api_key = resolve_api_key(cfg.api_key_env)
    metrics = Metrics()
    models = request_models(cfg.max_items, cfg.max_text_chars)
    max_input_tokens = cfg.max_input_tokens or served.task.recipe.train.max_length
    log = RequestLog(cfg.log_requests) if cfg.log_requests else None

    def on_batch(stats: BatchStats) -> None:
        metrics.observe_batch(stats, sum(served.generated_tokens(p) for p in stats.outputs))

    batcher: Batcher[Example, dict[str, Any]] = Batcher(served.predict, max_batch=cfg.max_batch,
                                                        batch_wait_ms=cfg.batch_wait_ms,
                                                        queue_size=cfg.queue_size, on_batch=on_batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="tuneforge serve", version="1", lifespan=lifespan,
                  description=f"Serves the tuneforge run `{served.name}` ({served.task.name}). " + (__doc__ or ""))
    app.state.batcher, app.state.metrics, app.state.served = batcher, metrics, served
    auth = [Depends(_auth_dependency(api_key))] if api_key else []
    _install_observer(app, metrics, log)

    async def run(examples: list[Example]) -> list[dict[str, Any]]:
        served.check_prompt_lengths(examples, max_input_tokens)
        try:
            return await batcher.submit(examples, timeout=cfg.timeout)
        except QueueFull as err:
            raise HTTPException(503, f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise HTTPException(504, f"no answer within {cfg.timeout:g} s") from None

    @app.exception_handler(UserError)
    async def user_error(_: Request, err: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", run=served.name, task=served.task.name, model=served.loaded.recipe.model,
                      queue_depth=batcher.depth, max_batch=cfg.max_batch)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        metrics.queue_depth.set(batcher.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _task_routes(app, served, run, auth, models.texts)
    _openai_routes(app, served, run, auth, models.chat, models.completion)
    return app


# ----------------------------------------------------------------------------- routes and pieces
def _task_routes(app: FastAPI, served: ServedModel, run: Predict, auth: list[Any],
                 TextsRequest: type[BaseModel]) -> None:  # noqa: N803 (a class, used as an annotation)
    """``/v1/classify`` or ``/v1/extract``, whichever the run's task is."""
    if served.task.name == "classification":
        @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, dependencies=auth)
        async def classify(body: TextsRequest, request: Request) -> ClassifyResponse:
            preds = await run(served.from_texts(body.texts))
            request.state.log = {"inputs": body.texts, "outputs": [p["prediction"] for p in preds]}
            return ClassifyResponse(model=served.name, results=[
                Classified(label=p["prediction"], confidence=p["confidence"], probabilities=p["probabilities"])
                for p in preds])

    if served.task.name == "extraction":
        @app.post("/v1/extract", response_model=ExtractResponse, responses=ERRORS, dependencies=auth)
        async def extract(body: TextsRequest, request: Request) -> ExtractResponse:
            preds = await run(served.from_texts(body.texts))
            request.state.log = {"inputs": body.texts, "outputs": [p["prediction"] for p in preds]}
            return ExtractResponse(model=served.name,
                                   results=[Extracted(fields=p["prediction"], raw=p["raw"]) for p in preds])


def _openai_routes(app: FastAPI, served: ServedModel, run: Predict, auth: list[Any],
                   ChatRequest: type[BaseModel], CompletionRequest: type[BaseModel]) -> None:  # noqa: N803
    """OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions``, for every task."""

    async def answer_one(example: Example, max_tokens: int | None, request: Request) -> tuple[Answer, Usage]:
        """One OpenAI-style request: predict, cut to ``max_tokens``, log, count tokens."""
        pred = (await run([example]))[0]
        answer = served.answer(pred, max_tokens)
        request.state.log = {"inputs": [example.text], "outputs": [pred["prediction"]]}
        return answer, _usage(served.prompt_tokens(example), answer)

    @app.post("/v1/chat/completions", response_model=ChatResponse, responses={**ERRORS, **SSE}, dependencies=auth)
    async def chat(body: ChatRequest, request: Request) -> Any:
        example = served.from_messages([m.model_dump() for m in body.messages])
        answer, usage = await answer_one(example, body.max_tokens, request)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return _sse(_chat_chunks(ident, created, served.name, answer))
        message = ChatMessage(role="assistant", content=answer.text)
        return ChatResponse(id=ident, created=created, model=served.name, usage=usage, choices=[
            ChatChoice(index=0, message=message, finish_reason=answer.finish_reason)])  # type: ignore[arg-type]

    @app.post("/v1/completions", response_model=CompletionResponse, responses={**ERRORS, **SSE}, dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        answer, usage = await answer_one(served.from_prompt(body.prompt), body.max_tokens, request)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return _sse(_completion_chunks(ident, created, served.name, answer))
        return CompletionResponse(id=ident, created=created, model=served.name, usage=usage, choices=[
            CompletionChoice(index=0, text=answer.text, finish_reason=answer.finish_reason)])  # type: ignore[arg-type]


def _auth_dependency(key: str) -> Callable[..., None]:
    bearer = HTTPBearer(auto_error=False, description="the key in the server's --api-key-env variable")

    def require_key(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = creds.credentials if creds else ""
        if not secrets.compare_digest(given.encode(), key.encode()):  # constant time: no timing oracle
            raise HTTPException(401, "missing or wrong API key; send `Authorization: Bearer <key>`",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_key


def _install_observer(app: FastAPI, metrics: Metrics, log: RequestLog | None) -> None:
    """Every request: refuse oversized bodies, time it, count it, and (opt-in) log /v1 traffic."""
    known = {"/health", "/metrics", "/v1/classify", "/v1/extract", "/v1/chat/completions", "/v1/completions"}

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Any]) -> Response:
        start = time.perf_counter()
        path = request.url.path
        endpoint = path if path in known else "other"  # bounded label set: no label per random URL
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            response: Response = JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        else:
            try:
                response = await call_next(request)
            except Exception:
                metrics.observe_request(endpoint, 500, time.perf_counter() - start)
                raise
        seconds = time.perf_counter() - start
        metrics.observe_request(endpoint, response.status_code, seconds)
        if log is not None and path.startswith("/v1/"):
            payload = getattr(request.state, "log", {})
            log.write({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "endpoint": endpoint,
                       "status": response.status_code, "latency_s": round(seconds, 6), **payload})
        return response


def _usage(prompt_tokens: int, answer: Answer) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=answer.completion_tokens,
                 total_tokens=prompt_tokens + answer.completion_tokens)


def _pieces(text: str) -> list[str]:
    """Word-sized pieces whose concatenation is ``text`` exactly."""
    return re.findall(r"\s*\S+|\s+$", text) or [""]


def _sse(chunks: list[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            await asyncio.sleep(0)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _chat_chunks(ident: str, created: int, model: str, answer: Answer) -> list[dict[str, Any]]:
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    deltas = [{"role": "assistant"}] + [{"content": p} for p in _pieces(answer.text)]
    chunks = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    return chunks + [{**head, "choices": [{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}]}]


def _completion_chunks(ident: str, created: int, model: str, answer: Answer) -> list[dict[str, Any]]:
    head = {"id": ident, "object": "text_completion", "created": created, "model": model}
    chunks = [{**head, "choices": [{"index": 0, "text": p, "finish_reason": None}]} for p in _pieces(answer.text)]
    return chunks + [{**head, "choices": [{"index": 0, "text": "", "finish_reason": answer.finish_reason}]}]
