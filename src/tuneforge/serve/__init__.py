"""Serve a finished run over HTTP: ``create_app`` builds the FastAPI app, ``serve`` runs it with uvicorn."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tuneforge.serve.config import ServeConfig


def serve(run_dir: Path | str, cfg: ServeConfig | None = None) -> None:
    """Load the run and serve it until interrupted (Ctrl-C stops uvicorn cleanly).

    A keyless server bound beyond loopback is refused before the model loads, unless
    ``insecure_no_key``; then a loud warning goes to stderr.
    """
    import uvicorn

    from tuneforge.serve.app import create_app
    from tuneforge.serve.config import exposure_warning, resolve_api_key
    from tuneforge.serve.served import ServedModel

    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars per batch in a server's log
    cfg = cfg or ServeConfig()
    resolve_api_key(cfg.api_key_env)  # fail before the model loads
    warning = exposure_warning(cfg)
    _log_to_stderr()
    app = create_app(ServedModel.from_run(run_dir), cfg)
    if warning:
        print("\n".join(["!" * 78, warning, "!" * 78]), file=sys.stderr, flush=True)
    limit = app.state.timeout
    docs = "metrics at /metrics" + (" (public)" if cfg.public_metrics or not cfg.api_key_env else " (key required)")
    print(f"serving {run_dir} on http://{cfg.host}:{cfg.port} (OpenAPI at /docs, {docs}); "
          f"timeout {limit.seconds:.0f} s ({limit.why})", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)


def _log_to_stderr() -> None:
    """The server's own log lines (5xx with their request ids) on stderr, once per process."""
    logger = logging.getLogger("tuneforge.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


__all__ = ["ServeConfig", "serve"]
