"""The studio's web application: FastAPI, Jinja2 pages rendered on the server, one module per page.

Every page calls the library's public functions (``tuneforge.api``, the run catalogue, the data
audit, the report renderers); the studio adds only what a browser needs: routes, forms and a queue.
Each page module has a ``router`` and a ``NAV`` entry (or None); ``PAGES`` below is the one list.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tuneforge.errors import UserError
from tuneforge.studio.queue import JobQueue
from tuneforge.studio.security import COOKIE, HEADER, SAFE_METHODS, Guard
from tuneforge.studio.workspace import Workspace

HERE = Path(__file__).parent
MAX_FORM_BYTES = 1 << 20


@dataclass
class Studio:
    """What every page needs: the runs root and its workspace, the queue, the guard and the templates."""

    ws: Workspace
    queue: JobQueue
    guard: Guard
    templates: Jinja2Templates
    max_upload_bytes: int

    @property
    def root(self) -> Path:
        return self.ws.runs

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(request, name, {"nav": nav(), "root": self.root, **context},
                                               status_code=status_code)


def studio(request: Request) -> Studio:
    return request.app.state.studio  # type: ignore[no-any-return]


async def form(request: Request) -> dict[str, str]:
    """A URL-encoded form body (the last value of each name); no multipart parser needed."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise UserError(f"the form is larger than {MAX_FORM_BYTES} bytes")
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}


async def json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise UserError(f"the request is larger than {MAX_FORM_BYTES} bytes")
    try:
        data = json.loads(body or b"{}")
    except ValueError as err:
        raise UserError(f"the request body is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError("the request body must be a JSON object")
    return data


def nav() -> list[tuple[str, str]]:
    from tuneforge.studio.pages import PAGES

    return [p.NAV for p in PAGES if p.NAV is not None]


def _message(err: BaseException) -> tuple[str, int]:
    """The one line a user sees; the CLI's wording, so the studio and the command line say the same thing."""
    from tuneforge.cli import describe_error

    text, code = describe_error(err)
    return text.removeprefix("tuneforge: "), 400 if code == 2 else 500


def create_app(runs: Path | str, *, host: str = "127.0.0.1", token: str | None = None,
               max_upload_mb: float = 50.0, start_queue: bool = True) -> FastAPI:
    """The studio over the runs root ``runs``; off loopback a token is required (``Guard.for_host`` makes one)."""
    from tuneforge.studio.pages import PAGES

    ws = Workspace.at(runs)
    guard = Guard.for_host(host, token)
    queue = JobQueue(ws)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(title="tuneforge studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = Studio(ws, queue, guard, templates, int(max_upload_mb * (1 << 20)))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for page in PAGES:
        app.include_router(page.router)
    _guard_requests(app, guard)
    _errors(app)
    if start_queue:
        app.router.on_startup.append(queue.start)
        app.router.on_shutdown.append(queue.close)
    return app


def _guard_requests(app: FastAPI, guard: Guard) -> None:
    @app.middleware("http")
    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not guard.host_ok(request.headers.get("host")):
            return PlainTextResponse("this studio answers only on its loopback address", status_code=403)
        query_token = request.query_params.get("token")
        if not guard.presented_token_ok(query_token, request.cookies.get(COOKIE), request.headers.get(HEADER)):
            return PlainTextResponse("a token is required: open the address the studio printed at start "
                                     "(it ends in ?token=...)", status_code=401)
        if request.method not in SAFE_METHODS and not guard.same_origin(
                request.headers.get("host"), request.headers.get("origin"), request.headers.get("referer")):
            return PlainTextResponse("refused: a state-changing request must come from a studio page "
                                     "(Origin or Referer of this host)", status_code=403)
        if query_token is not None and guard.token is not None and request.method in SAFE_METHODS:
            response: Response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            response.set_cookie(COOKIE, guard.token, httponly=True, samesite="strict")
            return response
        response = await call_next(request)
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self' 'unsafe-inline'; frame-ancestors 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _errors(app: FastAPI) -> None:
    @app.exception_handler(UserError)
    @app.exception_handler(Exception)
    async def any_error(request: Request, err: Exception) -> Response:
        message, status = _message(err)
        if request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": message}, status_code=status)
        return studio(request).page(request, "message.html", status_code=status, message=message)
