"""What every studio page is given: the runs root and its workspace, the queue, the guard, the templates,
and the two ways a page reads a request body (a URL-encoded form, a JSON object)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from tuneforge.errors import UserError
from tuneforge.studio.queue import JobQueue
from tuneforge.studio.security import Guard
from tuneforge.studio.workspace import Workspace

MAX_FORM_BYTES = 1 << 20


@dataclass
class Studio:
    """What every page needs; ``nav`` is the menu (``(href, label)`` of each page that has one)."""

    ws: Workspace
    queue: JobQueue
    guard: Guard
    templates: Jinja2Templates
    max_upload_bytes: int
    nav: list[tuple[str, str]]

    @property
    def root(self) -> Path:
        return self.ws.runs

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(request, name, {"nav": self.nav, "root": self.root, **context},
                                               status_code=status_code)


def studio(request: Request) -> Studio:
    found: Studio = request.app.state.studio
    return found


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
