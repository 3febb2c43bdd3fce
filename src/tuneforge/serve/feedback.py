"""``POST /v1/feedback``: a user's verdict on one served answer, kept beside the request log.

Every answer of ``/v1/chat/completions`` and ``/v1/completions`` carries an ``id`` (``chatcmpl-...``,
``cmpl-...``) and the request log (``--log-requests``) records it with the redacted input and output. A client
sends back that id with a ``rating`` (good / bad) and/or the ``preferred`` answer the user would have wanted;
the server appends it to ``<log>.feedback.jsonl`` with the same redaction and the same owner-only file mode.
``tuneforge data feedback LOG`` joins the two files into preference data (``tuneforge.data.feedback``).

The body is small and strict (unknown keys refused, the preferred answer no longer than ``--max-text-chars``)
and the route sits behind the server's API key and body-size limit like every ``/v1`` route. A server
without a request log answers 409: feedback would have no answer to attach to.
"""

# no ``from __future__ import annotations``: FastAPI reads the handler's body class (built per server) from its
# annotation, which must be the class itself, not a name to look up in this module
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, HTTPException
from pydantic import Field, StringConstraints, create_model, model_validator

from tuneforge.serve.config import ServeConfig
from tuneforge.serve.schemas import Strict, Text

ANSWER_ID = r"^[A-Za-z0-9_-]{1,100}$"
MAX_COMMENT = 2000


class LogWriter(Protocol):
    """What writes one redacted line to an owner-only JSONL file (the server's ``RequestLog``)."""

    def write(self, row: dict[str, Any]) -> None: ...


def feedback_path(log: Path) -> Path:
    """Where the feedback on a request log's answers goes: ``requests.jsonl`` -> ``requests.feedback.jsonl``."""
    return log.with_name(f"{log.stem}.feedback.jsonl")


class FeedbackAck(Strict):
    id: str
    stored: bool = True


class FeedbackRequest(Strict):
    """A verdict on one served answer: a rating, the answer the user wanted instead, or both."""

    id: str = Field(pattern=ANSWER_ID, description="the `id` of the answer being judged")
    rating: Literal["good", "bad"] | None = Field(None, description="the user's verdict on the answer")
    preferred: Text | None = Field(None, min_length=1, description="the answer the user would have wanted instead")
    comment: Text | None = Field(None, max_length=MAX_COMMENT)

    @model_validator(mode="after")
    def _says_something(self) -> "FeedbackRequest":
        if self.rating is None and self.preferred is None:
            raise ValueError("give a rating (good or bad), a preferred answer, or both")
        return self


def feedback_model(max_text_chars: int) -> type[FeedbackRequest]:
    """The request body with the server's text limit on ``preferred`` (as ``schemas.request_models`` builds the
    other bodies for the limits in force)."""
    limited = Annotated[Text, StringConstraints(min_length=1, max_length=max_text_chars)]
    return create_model("FeedbackRequest", __base__=FeedbackRequest, preferred=(limited | None, Field(
        None, description=f"the answer the user would have wanted instead (at most {max_text_chars} characters)")))


def register_feedback(app: FastAPI, cfg: ServeConfig, auth: list[Any], writer: Callable[[Path], LogWriter]) -> None:
    """Add ``POST /v1/feedback``; ``writer`` is the request log's class, so feedback gets its redaction and mode."""
    sink = writer(feedback_path(cfg.log_requests)) if cfg.log_requests else None
    _route(app, feedback_model(cfg.max_text_chars), sink, auth)


def _route(app: FastAPI, Body: type[FeedbackRequest], sink: LogWriter | None,  # noqa: N803 (a class)
           auth: list[Any]) -> None:
    async def feedback(body: Body) -> FeedbackAck:
        if sink is None:
            raise HTTPException(409, "this server keeps no request log, so feedback has no answer to attach to; "
                                "start it with --log-requests FILE")
        row = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               **body.model_dump(exclude_none=True)}
        sink.write(row)
        return FeedbackAck(id=body.id)

    app.post("/v1/feedback", response_model=FeedbackAck, dependencies=auth, name="feedback")(feedback)
