"""The studio's web application: FastAPI, Jinja2 pages rendered on the server, one module per page.

Every page calls the library's public functions (``tuneforge.api``, the run catalogue, the data
audit, the report renderers); the studio adds only what a browser needs: routes, forms and a queue.
Each page module has a ``router`` and a ``NAV`` entry (or None); ``PAGES`` is the one list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tuneforge.messages import describe_error
from tuneforge.errors import UserError
from tuneforge.studio.context import Studio, studio
from tuneforge.studio.pages import PAGES
from tuneforge.studio.queue import JobQueue
from tuneforge.studio.security import COOKIE, HEADER, SAFE_METHODS, Guard
from tuneforge.studio.workspace import Workspace

HERE = Path(__file__).parent


def _message(err: BaseException) -> tuple[str, int]:
    """The one line a user sees; the CLI's wording, so the studio and the command line say the same thing."""
    text, code = describe_error(err)
    return text.removeprefix("tuneforge: "), 400 if code == 2 else 500


def create_app(runs: Path | str, *, host: str = "127.0.0.1", token: str | None = None,
               max_upload_mb: float = 50.0, start_queue: bool = True) -> FastAPI:
    """The studio over the runs root ``runs``; off loopback a token is required (``Guard.for_host`` makes one)."""
    ws = Workspace.at(runs)
    guard = Guard.for_host(host, token)
    queue = JobQueue(ws)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(title="tuneforge studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = Studio(ws, queue, guard, templates, int(max_upload_mb * (1 << 20)),
                              [p.NAV for p in PAGES if p.NAV is not None])
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
