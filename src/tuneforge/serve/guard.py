"""The server's outer wall: a pure ASGI middleware that runs before FastAPI reads, parses or authenticates.

For every request, in this order:

1. a request id: the client's ``X-Request-ID`` when it is short and plain (letters, digits,
   ``.-_:``), else a fresh one; it is sent back in the ``X-Request-ID`` header of every response,
   kept in ``request.state.request_id`` for error bodies, and written in every log line;
2. the body size: a ``Content-Length`` over the cap is refused at once; the body is then read
   as it streams in (chunked uploads have no ``Content-Length``) and counted, and the moment it
   passes the cap the request is answered 413 without reading further. At most ``max_body``
   bytes are ever held, and nothing is parsed or authenticated before the size is known;
3. the key: when the server has one, every path but ``/health`` (and ``/metrics``, ``/openapi.json``,
   ``/docs`` when they are public) needs ``Authorization: Bearer <key>``, checked in constant
   time before the body reaches the JSON parser;
4. the app runs on the buffered body; an exception that escapes it is logged with its traceback
   and the request id and answered 500 with the id (never the traceback), and every other 5xx
   is logged with its id too.

``on_done(scope, status, seconds)`` is called once per request, whatever answered it (metrics and
the request log), so a 401 or 413 is counted like any other answer.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tuneforge.serve.error_shape import error_body

logger = logging.getLogger("tuneforge.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
OnDone = Callable[[Scope, int, float], None]

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class _TooLarge(Exception):
    pass


class Guard:
    """Request id, streamed body cap, API key and last-resort error handling around an ASGI app."""

    def __init__(self, app: ASGIApp, *, max_body: int, api_key: str | None, public_paths: frozenset[str],
                 on_done: OnDone | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.api_key = api_key
        self.public_paths = public_paths
        self.on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = request_id(_header(scope, b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        sent: dict[str, Any] = {"status": None}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        where = f"{scope.get('method')} {_printable(scope.get('path', ''))}"
        try:
            await self._handle(scope, receive, send_with_id, rid)
        except Exception:
            logger.exception("request %s: %s failed with an unhandled error", rid, where)
            if sent["status"] is not None:  # the answer has begun: nothing sane can follow it
                raise
            await _reply(send_with_id, 500, f"internal server error; quote request id {rid} to the operator", rid,
                         path=scope.get("path", ""))
        else:
            if sent["status"] is not None and sent["status"] >= 500:
                logger.error("request %s: %s answered %d", rid, where, sent["status"])
        status = sent["status"] or 499  # none: the client went away before an answer (nginx's 499)
        if self.on_done is not None:
            try:
                self.on_done(scope, status, time.perf_counter() - start)
            except Exception:  # metrics or the log must never turn an answered request into an error
                logger.exception("request %s: recording the request failed", rid)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        length = _header(scope, b"content-length")
        if length is not None and not length.isdigit():
            await _reply(send, 400, "Content-Length is not a number", rid, path=scope.get("path", ""))
            return
        if length is not None and int(length) > self.max_body:
            await _reply(send, 413, self._too_large(), rid, path=scope.get("path", ""))
            return
        try:
            body, disconnected = await _read_body(receive, self.max_body)
        except _TooLarge:
            await _reply(send, 413, self._too_large(), rid, path=scope.get("path", ""))
            return
        if disconnected:
            return
        if not self._authorised(scope):
            await _reply(send, 401, "missing or wrong API key; send `Authorization: Bearer <key>`", rid,
                         headers=[(b"www-authenticate", b"Bearer")], path=scope.get("path", ""))
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> str:
        return f"request body over {self.max_body} bytes; send fewer or shorter texts"

    def _authorised(self, scope: Scope) -> bool:
        if self.api_key is None or scope.get("path", "") in self.public_paths:
            return True
        header = _header(scope, b"authorization") or ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        # constant time: no timing oracle; latin-1 is how the header arrived, so any bytes compare
        return secrets.compare_digest(given.strip().encode("latin-1", "replace"), self.api_key.encode())


def request_id(given: str | None) -> str:
    """The client's id when it is safe to log and echo, else a new random one."""
    if given is not None and _CLIENT_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def _read_body(receive: Receive, cap: int) -> tuple[bytes, bool]:
    """The whole body, counted as it arrives; ``_TooLarge`` as soon as it passes ``cap``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then waits on the real one (for disconnects)."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _printable(text: str, limit: int = 200) -> str:
    """A path fit for one log line: control characters, non-ASCII and surrogates escaped, bounded."""
    return text[:limit].encode("unicode_escape").decode("ascii")


async def _reply(send: Send, status: int, detail: str, rid: str, headers: list[tuple[bytes, bytes]] | None = None,
                 path: str = "") -> None:
    body = json.dumps(error_body(path, status, detail, rid)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
