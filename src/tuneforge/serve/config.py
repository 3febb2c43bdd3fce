"""Server settings: one strict pydantic section, filled from ``tuneforge serve`` flags, and the checks on them."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.errors import ConfigError

MAX_BODY_BYTES = 1_000_000  # raw request bodies above this are refused (413) before parsing


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key_env: str | None = Field(None, description="environment variable holding the Bearer key to require")
    insecure_no_key: bool = Field(False, description="allow serving beyond loopback without a key (loudly warned)")
    public_metrics: bool = Field(False, description="answer /metrics, /openapi.json and /docs without the key")
    max_batch: int = Field(16, ge=1, le=256, description="most examples in one batched model call")
    batch_wait_ms: float = Field(10.0, ge=0, le=10_000, description="how long the first request waits for company")
    queue_size: int = Field(256, ge=1, le=100_000, description="requests waiting beyond this are answered 503")
    timeout: float | None = Field(None, gt=0, description="seconds a request may wait for its answer before a 504 "
                                  "(default: derived from the run's preflight, at least 120)")
    max_items: int = Field(32, ge=1, le=1024, description="most texts in one /v1/classify or /v1/extract request")
    max_text_chars: int = Field(4000, ge=1, le=100_000, description="longest text, prompt or message accepted")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=1_000_000_000,
                                description="longest request body, counted as it streams in (413 beyond it)")
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


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``; a name other than ``localhost`` counts as reachable."""
    if host.strip().lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(cfg: ServeConfig) -> str | None:
    """Refuse a keyless server that others can reach, unless ``--insecure-no-key``; then the warning to print.

    Anyone on the network could then use the model, read its metrics and fill its queue; the
    refusal names the two ways out so the choice is deliberate.
    """
    if cfg.api_key_env is not None or is_loopback(cfg.host):
        return None
    if not cfg.insecure_no_key:
        raise ConfigError(f"--host {cfg.host} lets other machines reach the server, and no --api-key-env is set: "
                          "anyone could use it. Set a key (export TUNEFORGE_KEY=...; --api-key-env TUNEFORGE_KEY), "
                          "bind to 127.0.0.1, or pass --insecure-no-key if the network is trusted")
    return (f"WARNING: serving on {cfg.host} WITHOUT AN API KEY (--insecure-no-key): anyone who can reach this "
            "port can use the model, read /metrics and fill the queue")
