"""The HTTP application: FastAPI routes over one ``ServedModel`` and one ``Batcher``.

Routes: ``/v1/chat/completions`` and ``/v1/completions`` (OpenAI-compatible, ``stream`` as
server-sent events), ``/v1/classify`` or ``/v1/extract`` (whichever the run's task is),
``/health`` and ``/metrics`` (Prometheus). FastAPI writes the OpenAPI document at
``/openapi.json`` from the same pydantic models that validate the requests.

Status codes a client can act on: 400 unreadable body, 401 missing or wrong API key, 413 body
too large, 422 invalid input (the message names the field), 503 queue full (retry later), 504 the
answer took longer than the server's timeout. Every answer carries an ``X-Request-ID`` header and
every error body a ``request_id``; a 5xx is logged under the same id.

Hardening (see ``guard.py``): the body is counted as it streams in and refused (413) past the cap
before it is parsed or the key is checked; with a key, everything but ``/health`` needs it
(``/metrics`` and the OpenAPI document too, unless ``public_metrics``); validation errors name
the field and never quote the input; ``/health`` says only ``{"status": "ok"}``.
"""

# no ``from __future__ import annotations`` here: FastAPI reads the route signatures at runtime,
# and the request models are local to ``create_app`` (built for the server's limits)
import asyncio
import json
import os
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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.errors import UserError
from tuneforge.serve.batching import Batcher, BatchStats, QueueFull
from tuneforge.serve.config import ServeConfig, resolve_api_key
from tuneforge.serve.feedback import register_feedback
from tuneforge.serve.guard import Guard, Scope
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.redact import redact
from tuneforge.serve.schemas import (
    ChatChoice, ChatMessage, ChatResponse, CompletionChoice, CompletionResponse, ErrorBody, Health, Usage,
    request_models, task_response_model,
)
from tuneforge.serve.served import Answer, ServedModel
from tuneforge.serve.timeouts import Timeout, derive_timeout, read_preflight
from tuneforge.tasks.base import Example

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body is not readable JSON"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    413: {"model": ErrorBody, "description": "request body too large"},
    503: {"model": ErrorBody, "description": "the queue is full; retry later"},
    504: {"model": ErrorBody, "description": "no answer within the server's timeout"},
}
Predict = Callable[[list[Example]], Awaitable[list[dict[str, Any]]]]  # validated, batched, timed-out prediction
SSE = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or server-sent events when stream is true"}}
KNOWN = {"/health", "/metrics", "/v1/chat/completions", "/v1/completions", "/v1/feedback"}  # and the task's own route
DOCS = {"/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")  # a field name fit to repeat: ours all are
MAX_ERRORS = 20  # validation errors listed in one answer (a list of 10,000 bad items needs no 10,000 lines)


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: a lone surrogate that slipped into an answer is escaped, not a 500."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")  # '\\udXXX' is the JSON escape of that surrogate


class RequestLog:
    """Opt-in JSONL log of requests: one line per /v1 request, inputs and outputs redacted (see ``redact``).

    The file holds what users sent, so it is created readable by its owner only (mode 0600, set at
    creation so there is no moment it is wider) and an existing file is narrowed to 0600; a symbolic
    link in its place is refused rather than followed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            os.close(self._open())  # fail at start-up, not at the first request
        except OSError as err:
            raise UserError(f"--log-requests {path}: cannot write the request log ({err.strerror}); "
                            "pick a file in a folder you can write") from None

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        return fd

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(redact(row), ensure_ascii=False, default=str) + "\n"
        data = line.encode("utf-8", "backslashreplace")
        with self._lock:  # one whole line per write
            fd = self._open()
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


def create_app(served: ServedModel, cfg: ServeConfig | None = None) -> FastAPI:
    """The application for one served run; the batcher starts and stops with the app's lifespan."""
    cfg = cfg or ServeConfig()
    api_key = resolve_api_key(cfg.api_key_env)
    metrics = Metrics()
    models = request_models(cfg.max_items, cfg.max_text_chars)
    max_input_tokens = cfg.max_input_tokens or served.task.recipe.train.max_length
    log = RequestLog(cfg.log_requests) if cfg.log_requests else None
    limit = request_timeout(served, cfg)

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

    app = FastAPI(title="tuneforge serve", version="1", lifespan=lifespan, default_response_class=SafeJSONResponse,
                  description=f"Serves the tuneforge run `{served.name}` ({served.task.name}). " + (__doc__ or ""))
    app.state.batcher, app.state.metrics, app.state.served, app.state.timeout = batcher, metrics, served, limit
    auth = [Depends(_auth_dependency(api_key))] if api_key else []
    _install_error_handlers(app)
    public = frozenset({"/health"} | (DOCS if cfg.public_metrics else set()))
    app.add_middleware(Guard, max_body=cfg.max_body_bytes, api_key=api_key, public_paths=public,
                       on_done=_recorder(metrics, log, KNOWN | _own_route(served)))

    async def run(examples: list[Example]) -> list[dict[str, Any]]:
        served.check_prompt_lengths(examples, max_input_tokens)
        try:
            return await batcher.submit(examples, timeout=limit.seconds)
        except QueueFull as err:
            raise HTTPException(503, f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise HTTPException(504, f"no answer within {limit.seconds:g} s (the server's --timeout)") from None

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        metrics.queue_depth.set(batcher.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _task_routes(app, served, run, auth, models.texts)
    _openai_routes(app, served, run, auth, models.chat, models.completion)
    register_feedback(app, cfg, auth, RequestLog)
    return app


def request_timeout(served: ServedModel, cfg: ServeConfig) -> Timeout:
    """The user's ``--timeout`` when given, else one derived from the run's measured latency (``timeouts``)."""
    if cfg.timeout is not None:
        return Timeout(cfg.timeout, "--timeout")
    return derive_timeout(read_preflight(served.run_dir), forwards_per_item=served.forwards_per_item,
                          queue_size=cfg.queue_size, max_batch=cfg.max_batch, device=served.device)


# ----------------------------------------------------------------------------- errors
def _rid(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def _clean(text: str, limit: int = 500) -> str:
    """A message fit to send back: bounded, and any surrogate escaped so the answer encodes."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_problems(errors: list[Any]) -> list[dict[str, Any]]:
    """Where each problem is and what it is, never the value that was sent (it may be personal, or 60 MB)."""
    out = []
    for e in errors[:MAX_ERRORS]:
        loc = [x if isinstance(x, int) or _FIELD.fullmatch(str(x)) else "<field name not repeated>"
               for x in e.get("loc", ())]  # an unknown key is the client's text too
        out.append({"loc": loc, "msg": _clean(str(e.get("msg", ""))), "type": _clean(str(e.get("type", "")), 100)})
    if len(errors) > MAX_ERRORS:
        out.append({"loc": [], "msg": f"... and {len(errors) - MAX_ERRORS} more problems", "type": "more"})
    return out


def _install_error_handlers(app: FastAPI) -> None:
    """Error bodies ``{"detail", "request_id"}``; FastAPI's own 422 would quote the whole input back."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse({"detail": validation_problems(list(err.errors())), "request_id": _rid(request)},
                                status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return SafeJSONResponse({"detail": _clean(str(err.detail)), "request_id": _rid(request)},
                                status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        return SafeJSONResponse({"detail": _clean(str(err), 2000), "request_id": _rid(request)}, status_code=422)


def _recorder(metrics: Metrics, log: RequestLog | None, known: set[str]) -> Callable[[Scope, int, float], None]:
    """What ``Guard`` calls once per answered request: count and time it, and (opt-in) log /v1 traffic."""

    def record(scope: Scope, status: int, seconds: float) -> None:
        path = scope.get("path", "")
        endpoint = path if path in known else "other"  # bounded label set: no label per random URL
        metrics.observe_request(endpoint, status, seconds)
        if log is not None and path.startswith("/v1/"):
            payload = scope.get("state", {}).get("log", {})
            log.write({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "endpoint": endpoint,
                       "status": status, "latency_s": round(seconds, 6), **payload})

    return record


# ----------------------------------------------------------------------------- routes and pieces
def _own_route(served: ServedModel) -> set[str]:
    route = served.task.serve_route
    return {route} if route else set()


def _task_routes(app: FastAPI, served: ServedModel, run: Predict, auth: list[Any],
                 TextsRequest: type[BaseModel]) -> None:  # noqa: N803 (a class, used as an annotation)
    """The task's own endpoint (``/v1/classify``, ``/v1/extract``), where it has one: texts in, its results out."""
    task = served.task
    route = task.serve_route
    if route is None or task.serve_result_model is None:
        return
    response_model = task_response_model(route, task.serve_result_model)

    async def answer_texts(body: TextsRequest, request: Request) -> Any:
        preds = await run(served.from_texts(body.texts))
        request.state.log = {"inputs": body.texts, "outputs": [p["prediction"] for p in preds]}
        return response_model(model=served.name, results=[task.serve_result(p) for p in preds])

    app.post(route, response_model=response_model, responses=ERRORS, dependencies=auth,
             name=route.rsplit("/", 1)[-1])(answer_texts)


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
        request.state.log["id"] = ident  # so feedback on this answer (/v1/feedback) finds it in the log
        if body.stream:
            return _sse(_chat_chunks(ident, created, served.name, answer))
        message = ChatMessage(role="assistant", content=answer.text)
        return ChatResponse(id=ident, created=created, model=served.name, usage=usage, choices=[
            ChatChoice(index=0, message=message, finish_reason=answer.finish_reason)])  # type: ignore[arg-type]

    @app.post("/v1/completions", response_model=CompletionResponse, responses={**ERRORS, **SSE}, dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        answer, usage = await answer_one(served.from_prompt(body.prompt), body.max_tokens, request)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        request.state.log["id"] = ident
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
