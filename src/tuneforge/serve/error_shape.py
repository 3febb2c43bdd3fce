"""Error bodies: OpenAI's ``{"error": {"message", "type", "param", "code"}}`` on ``/v1`` routes.

OpenAI's clients read this shape (``openai.BadRequestError.message``, ``.code``, ``.param``); a
``{"detail": ...}`` body reaches them as an unexplained status. Other routes (``/metrics``, the
OpenAPI document) keep FastAPI's ``{"detail": ...}``. Every body also carries the ``request_id``.
"""

from __future__ import annotations

from typing import Any

#: the OpenAI error ``type`` and ``code`` of each status this server answers with
KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_value"),
    503: ("server_error", "server_busy"),
    504: ("server_error", "timeout"),
}


def error_body(path: str, status: int, message: str, rid: str, *, param: str | None = None,
               problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON body of an error answer on ``path``; ``problems`` lists a validation error's fields."""
    if not path.startswith("/v1/"):
        return {"detail": problems if problems is not None else message, "request_id": rid}
    kind, code = KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    error: dict[str, Any] = {"message": message, "type": kind, "param": param, "code": code}
    if problems is not None:
        error["problems"] = problems
    return {"error": error, "request_id": rid}
