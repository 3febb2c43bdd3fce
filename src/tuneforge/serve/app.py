"""The HTTP application: FastAPI routes over one ``ServedModel`` and one ``Batcher``.

Routes: ``/v1/chat/completions`` and ``/v1/completions`` (OpenAI-compatible, ``stream`` as
server-sent events), ``/v1/classify`` or ``/v1/extract`` (whichever the run's task is),
``/health`` and ``/metrics`` (Prometheus). FastAPI writes the OpenAPI document at
``/openapi.json`` from the same pydantic models that validate the requests.

Errors on /v1 routes come in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
(``error_shape.py``). Status codes a client can act on: 400 an unsupported OpenAI parameter or an
unreadable body, 401 missing or wrong API key, 413 body too large, 422 invalid input (the message names the field),
503 queue full (retry later), 504 the
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
from dataclasses import dataclass
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
from tuneforge.infer import Generated, Sampling
from tuneforge.serve.batching import Batcher, BatchStats, QueueFull
from tuneforge.serve.config import ServeConfig, resolve_api_key
from tuneforge.serve.continuous import ContinuousBatcher, Stream, TextDeltas
from tuneforge.serve.error_shape import error_body
from tuneforge.serve.feedback import register_feedback
from tuneforge.serve.guard import Guard, Scope
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.redact import redact
from tuneforge.serve.schemas import (
    ChatChoice, ChatMessage, ChatResponse, CompletionChoice, CompletionResponse, ErrorBody, Health, ModelCard,
    ModelList, Usage, request_models, task_response_model,
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
# and the task's own route
KNOWN = {"/health", "/metrics", "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback"}
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
    max_input_tokens = cfg.max_input_tokens or served.task.settings.max_length
    log = RequestLog(cfg.log_requests) if cfg.log_requests else None
    limit = request_timeout(served, cfg)

    def on_batch(stats: BatchStats) -> None:
        metrics.observe_batch(stats, sum(served.generated_tokens(p) for p in stats.outputs))

    batcher: Batcher[Example, dict[str, Any]] = Batcher(served.predict, max_batch=cfg.max_batch,
                                                        batch_wait_ms=cfg.batch_wait_ms,
                                                        queue_size=cfg.queue_size, on_batch=on_batch)

    decoder = ContinuousBatcher(served.new_decode_batch, max_batch=cfg.max_batch, queue_size=cfg.queue_size,
                                on_step=metrics.observe_step) if served.decodes_itself else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        if decoder is not None:
            decoder.start()
        yield
        batcher.stop()
        if decoder is not None:
            decoder.stop()

    app = FastAPI(title="tuneforge serve", version="1", lifespan=lifespan, default_response_class=SafeJSONResponse,
                  description=f"Serves the tuneforge run `{served.name}` ({served.task.name}). " + (__doc__ or ""))
    app.state.batcher, app.state.metrics, app.state.served, app.state.timeout = batcher, metrics, served, limit
    app.state.decoder = decoder
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

    def open_streams(examples: list[Example], rules: list[Sampling]) -> list[Stream]:
        """Queue one answer per (example, rule) in the decode loop; 503 when its queue is full."""
        if decoder is None:
            raise RuntimeError("this run's answers are not decoded by the server")
        served.check_prompt_lengths(examples, max_input_tokens)
        try:
            return [decoder.submit(served.prompt_ids(e), r) for e, r in zip(examples, rules, strict=True)]
        except QueueFull as err:
            raise HTTPException(503, f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from None

    async def finish(streams: list[Stream]) -> list[Generated]:
        """Every stream's answer, within the server's timeout (504 past it; the rows are dropped)."""
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(s.result() for s in streams)), limit.seconds))
        except TimeoutError:
            raise HTTPException(504, f"no answer within {limit.seconds:g} s (the server's --timeout)") from None
        finally:
            for s in streams:
                s.cancelled.set()

    async def run_generated(examples: list[Example]) -> list[dict[str, Any]]:
        """``predict`` of a generating task, on the continuous decode loop: the same answers."""
        done = await finish(open_streams(examples, [served.sampling()] * len(examples)))
        return [served.task.from_answer(g.text.strip()) for g in done]

    generated = Decoding(open_streams, finish) if decoder is not None else None

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        metrics.queue_depth.set(batcher.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _task_routes(app, served, run_generated if decoder is not None else run, auth, models.texts)
    _openai_routes(app, served, run, generated, auth, models.chat, models.completion)
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
    """Error bodies in OpenAI's shape on /v1 routes (``error_shape``); FastAPI's own 422 would quote the input."""

    def reply(request: Request, status: int, message: str, headers: Any = None, **extra: Any) -> JSONResponse:
        return SafeJSONResponse(error_body(request.url.path, status, message, _rid(request), **extra),
                                status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = validation_problems(list(err.errors()))
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        param = ".".join(str(x) for x in first["loc"][1:]) or None  # without "body"
        return reply(request, 422, f"{param or 'body'}: {first['msg']}", param=param, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        param = str(err.detail).split(":", 1)[0] if err.status_code == 400 and ":" in str(err.detail) else None
        return reply(request, err.status_code, _clean(str(err.detail)), getattr(err, "headers", None), param=param)

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        return reply(request, 422, _clean(str(err), 2000))


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


@dataclass
class Decoding:
    """How the OpenAI routes reach the continuous decode loop (for runs whose answers the server decodes)."""

    open: Callable[[list[Example], list[Sampling]], list[Stream]]
    finish: Callable[[list[Stream]], Awaitable[list[Generated]]]


def _openai_routes(app: FastAPI, served: ServedModel, run: Predict, decoding: Decoding | None, auth: list[Any],
                   ChatRequest: type[BaseModel], CompletionRequest: type[BaseModel]) -> None:  # noqa: N803
    """OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions``, for every task.

    A run whose answers are generated is decoded in the continuous batch: sampling, ``n``, ``stop``
    and ``seed`` are honoured and ``stream`` sends each token as it comes. Any other run (a
    classifier) answers through ``predict``, its answer being the label.
    """
    created = int(time.time())

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, dependencies=auth)
    async def list_models() -> ModelList:
        """The one served run, so that OpenAI clients (``client.models.list()``) find the model's name."""
        return ModelList(data=[ModelCard(id=served.name, created=created)])

    async def answer_one(example: Example, max_tokens: int | None, request: Request) -> tuple[Answer, Usage]:
        """One OpenAI-style request: predict, cut to ``max_tokens``, log, count tokens."""
        pred = (await run([example]))[0]
        answer = served.answer(pred, max_tokens)
        request.state.log = {"inputs": [example.text], "outputs": [pred["prediction"]]}
        return answer, _usage(served.prompt_tokens(example), answer)

    async def respond(example: Example, body: Any, request: Request, kind: str) -> Any:
        ident, created_at = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
        _refuse_unsupported(body)
        if decoding is None:
            answer, usage = await answer_one(example, body.max_completion_tokens or body.max_tokens, request)
            request.state.log["id"] = ident  # so feedback on this answer (/v1/feedback) finds it in the log
            if body.stream:
                return _sse(_listed(_whole_chunks(kind, ident, created_at, served.name, answer)))
            return _response(kind, ident, created_at, served.name, [answer], usage)
        rules = [served.sampling(body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p,
                                 None if body.seed is None else body.seed + i, body.stop_strings())
                 for i in range(body.n)]
        streams = decoding.open([example] * body.n, rules)
        request.state.log = {"inputs": [example.text], "id": ident}  # the id /v1/feedback refers to
        if body.stream:
            return _sse(_token_chunks(kind, ident, created_at, served.name, streams, served, rules))
        done = await decoding.finish(streams)
        answers = [Answer(g.text.strip(), len(g.tokens), g.finish_reason) for g in done]
        request.state.log["outputs"] = [a.text for a in answers]
        prompt = served.prompt_tokens(example)
        completion = sum(a.completion_tokens for a in answers)
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        return _response(kind, ident, created_at, served.name, answers, usage)

    @app.post("/v1/chat/completions", response_model=ChatResponse, responses={**ERRORS, **SSE}, dependencies=auth)
    async def chat(body: ChatRequest, request: Request) -> Any:
        example = served.from_messages([m.model_dump() for m in body.messages])
        return await respond(example, body, request, "chat")

    @app.post("/v1/completions", response_model=CompletionResponse, responses={**ERRORS, **SSE}, dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await respond(served.from_prompt(body.prompt), body, request, "text")


def _refuse_unsupported(body: Any) -> None:
    param = body.unsupported()
    if param is not None:
        raise HTTPException(400, f"{param}: not supported by this server")


def _response(kind: str, ident: str, created: int, model: str, answers: list[Answer], usage: Usage) -> Any:
    if kind == "chat":
        return ChatResponse(id=ident, created=created, model=model, usage=usage, choices=[
            ChatChoice(index=i, message=ChatMessage(role="assistant", content=a.text),
                       finish_reason=a.finish_reason)  # type: ignore[arg-type]
            for i, a in enumerate(answers)])
    return CompletionResponse(id=ident, created=created, model=model, usage=usage, choices=[
        CompletionChoice(index=i, text=a.text, finish_reason=a.finish_reason)  # type: ignore[arg-type]
        for i, a in enumerate(answers)])


def _chunk(kind: str, ident: str, created: int, model: str, index: int, piece: str | None,
           finish: str | None, first: bool = False) -> dict[str, Any]:
    """One server-sent chunk in OpenAI's shape: a chat delta, or a completion's text."""
    if kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else ({} if piece is None else {"content": piece})
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [choice]}
    return {"id": ident, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": piece or "", "finish_reason": finish}]}


def _whole_chunks(kind: str, ident: str, created: int, model: str, answer: Answer) -> list[dict[str, Any]]:
    """A finished answer (a classifier's label) as chunks: it exists whole before the first one is sent."""
    head = [_chunk(kind, ident, created, model, 0, None, None, first=True)] if kind == "chat" else []
    return head + [_chunk(kind, ident, created, model, 0, p, None) for p in _pieces(answer.text)] + [
        _chunk(kind, ident, created, model, 0, None, answer.finish_reason)]


async def _listed(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield chunk


async def _token_chunks(kind: str, ident: str, created: int, model: str, streams: list[Stream], served: ServedModel,
                        rules: list[Sampling]) -> AsyncIterator[dict[str, Any]]:
    """Chunks as tokens arrive: every answer's text pieces, interleaved, then each one's finish reason."""
    queue: asyncio.Queue[tuple[int, str | None, str | None]] = asyncio.Queue()

    async def pump(index: int, stream: Stream, rule: Sampling) -> None:
        deltas = TextDeltas(served.tokenizer, rule.stop)
        async for event in stream.tokens():
            if event.token is not None and event.done is None:
                piece = deltas.add(event.token)
                if piece:
                    await queue.put((index, piece, None))
            if event.done is not None:
                await queue.put((index, deltas.finish(event.done) or None, event.done.finish_reason))

    if kind == "chat":
        for i in range(len(streams)):
            yield _chunk(kind, ident, created, model, i, None, None, first=True)
    tasks = [asyncio.create_task(pump(i, s, r)) for i, (s, r) in enumerate(zip(streams, rules, strict=True))]
    try:
        finished = 0
        while finished < len(streams):
            getter = asyncio.create_task(queue.get())
            await asyncio.wait([getter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                error = next((t.exception() for t in tasks if t.done() and t.exception() is not None), None)
                if error is not None:
                    raise error
                continue
            index, piece, finish = getter.result()
            if piece:
                yield _chunk(kind, ident, created, model, index, piece, None)
            if finish is not None:
                finished += 1
                yield _chunk(kind, ident, created, model, index, None, finish)
    finally:
        for t in tasks:
            t.cancel()
        for s in streams:
            s.cancelled.set()


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


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
