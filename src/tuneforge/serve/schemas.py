"""Request and response bodies. Pydantic validates them, FastAPI turns them into the OpenAPI document.

The limits are part of the contract (they show in ``/openapi.json``): a request over them is
answered 422 naming the field, before it can reach the queue or the model. They are set per
server (``tuneforge serve --max-items --max-text-chars``), so the request models are built by
``request_models`` for the limits in force rather than declared once at import.

Every string a request carries must be valid Unicode: JSON can spell a lone UTF-16 surrogate
(``"\\ud800"``), which Python accepts as a ``str`` but no tokenizer, log or UTF-8 response can
hold, so it is refused here with a 422 naming the field instead of failing later with a 500.
"""

from __future__ import annotations

import re
from types import GenericAlias
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, create_model

MAX_MESSAGES = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """``text`` unchanged; a lone surrogate is refused without quoting the text (no echo of the input)."""
    found = _SURROGATE.search(text)
    if found:
        raise ValueError(f"not valid Unicode: a lone surrogate (U+{ord(found.group()):04X}) at character "
                         f"{found.start()}; send UTF-8 text")
    return text


Text = Annotated[str, AfterValidator(valid_unicode)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lenient(BaseModel):
    """OpenAI-compatible bodies: clients send fields we do not use (``user``, ``n``...); ignore them."""

    model_config = ConfigDict(extra="ignore")


# ----------------------------------------------------------------------------- task endpoints
def task_response_model(route: str, result: type[BaseModel]) -> type[BaseModel]:
    """``{model, results}`` around a task's own result model (``Task.serve_result_model``), named after the
    route in the OpenAPI document: ``/v1/classify`` answers a ``ClassifyResponse``."""
    name = route.rstrip("/").rsplit("/", 1)[-1].capitalize() + "Response"
    results: Any = GenericAlias(list, (result,))  # list[result], for a class known only at run time
    return create_model(name, model=(str, ...), results=(results, ...))


# ----------------------------------------------------------------------------- OpenAI-compatible
class ChatMessage(Lenient):
    role: Literal["system", "user", "assistant"]
    content: Text


#: OpenAI parameters this server cannot honour: a request that sets one is refused (400, naming it) rather
#: than answered as if it had not been sent
UNSUPPORTED = frozenset({"logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call",
                         "response_format", "logit_bias", "presence_penalty", "frequency_penalty", "audio",
                         "modalities", "prediction", "best_of", "echo", "suffix", "reasoning_effort"})


class _GenerationParams(BaseModel):
    model_config = ConfigDict(extra="allow")  # other OpenAI keys (``user``, ``metadata``...) are ignored

    model: Text | None = Field(None, max_length=200, description="ignored: the server serves one run")
    max_tokens: int | None = Field(None, ge=1, le=4096,
                                   description="at most this many answer tokens (and at most the run's "
                                               "eval.max_new_tokens)")
    max_completion_tokens: int | None = Field(None, ge=1, le=4096, description="the newer name of max_tokens")
    temperature: float | None = Field(None, ge=0, le=2,
                                      description="0 or unset: greedy, as offline `tuneforge predict`")
    top_p: float | None = Field(None, gt=0, le=1,
                                description="nucleus sampling: keep the most likely tokens up to this mass")
    seed: int | None = Field(None, description="a sampled answer with a seed is the same on every call")
    n: int = Field(1, ge=1, le=8, description="answers per request (with a seed, answer i uses seed + i)")
    stop: str | list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None = Field(
        None, max_length=4, description="up to 4 strings; the answer ends before the first one it writes")
    stream: bool = Field(False, description="answer as server-sent events (OpenAI chunk format), token by token")

    def unsupported(self) -> str | None:
        """The first OpenAI parameter set in the request that this server does not implement."""
        extra = self.model_extra or {}
        return next((k for k in sorted(extra) if k in UNSUPPORTED and extra[k] not in (None, False, 0, [], {})), None)

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or ())
        return tuple(s for s in stops if s)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class Health(BaseModel):
    """Liveness only: answered without a key, so it names no run, model or load (those are in /metrics)."""

    status: Literal["ok"]


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``, in OpenAI's shape (``client.models.list()`` reads it)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneforge"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error or server_error")
    param: str | None = Field(description="the request field at fault, where there is one")
    code: str | None = Field(description="invalid_api_key, request_too_large, invalid_value, server_busy, timeout...")


class ErrorBody(BaseModel):
    """OpenAI's error shape (``openai`` clients raise it as ``APIStatusError`` with these fields)."""

    error: ErrorInfo
    request_id: str = Field(description="also in the X-Request-ID header and the server's log line")


class RequestModels(BaseModel):
    """The three request bodies built for one server's limits."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    texts: type[BaseModel]
    chat: type[BaseModel]
    completion: type[BaseModel]


def request_models(max_items: int, max_chars: int) -> RequestModels:
    # at least one non-blank character: a blank text has nothing to classify or extract from
    text = Annotated[Text, StringConstraints(min_length=1, max_length=max_chars, pattern=r"\S")]
    content = Annotated[Text, StringConstraints(max_length=max_chars)]
    message = create_model("ChatRequestMessage", __base__=ChatMessage, content=(content, ...))
    texts = create_model("TextsRequest", __base__=Strict, texts=(
        list[text], Field(min_length=1, max_length=max_items,
                          description=f"1 to {max_items} texts, each 1 to {max_chars} characters, not blank")))
    chat = create_model("ChatRequest", __base__=_GenerationParams,
                        messages=(list[message], Field(min_length=1, max_length=MAX_MESSAGES, description=(
                            "the conversation; the last message must come from the user, and a classification or "
                            "extraction run answers the last non-empty user message"))))
    completion = create_model("CompletionRequest", __base__=_GenerationParams, prompt=(text, ...))
    return RequestModels(texts=texts, chat=chat, completion=completion)
