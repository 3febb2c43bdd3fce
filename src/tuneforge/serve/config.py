"""Server settings: one strict pydantic section, filled from ``tuneforge serve`` flags."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.errors import ConfigError


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key_env: str | None = Field(None, description="environment variable holding the Bearer key to require")
    max_batch: int = Field(16, ge=1, le=256, description="most examples in one batched model call")
    batch_wait_ms: float = Field(10.0, ge=0, le=10_000, description="how long the first request waits for company")
    queue_size: int = Field(256, ge=1, le=100_000, description="requests waiting beyond this are answered 503")
    timeout: float = Field(120.0, gt=0, description="seconds a request may wait for its answer before a 504")
    max_items: int = Field(32, ge=1, le=1024, description="most texts in one /v1/classify or /v1/extract request")
    max_text_chars: int = Field(4000, ge=1, le=100_000, description="longest text, prompt or message accepted")
    max_input_tokens: int | None = Field(None, ge=1, description="longest prompt a generating run accepts, in "
                                         "tokens (default: the run's train.max_length, what it was tuned on)")
    log_requests: Path | None = Field(None, description="append redacted requests and answers to this JSONL file")


def resolve_api_key(env: str | None) -> str | None:
    """The key from the named variable; the key itself is never printed or logged."""
    if env is None:
        return None
    key = os.environ.get(env, "")
    if not key.strip():
        raise ConfigError(f"--api-key-env {env}: the environment variable {env} is unset or empty; "
                          "export the key in it, or drop --api-key-env to serve without a key")
    return key
