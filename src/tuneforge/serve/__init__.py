"""Serve a finished run over HTTP: ``create_app`` builds the FastAPI app, ``serve`` runs it with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

from tuneforge.serve.config import ServeConfig


def serve(run_dir: Path | str, cfg: ServeConfig | None = None) -> None:
    """Load the run and serve it until interrupted (Ctrl-C stops uvicorn cleanly)."""
    import uvicorn

    from tuneforge.serve.app import create_app
    from tuneforge.serve.config import resolve_api_key
    from tuneforge.serve.served import ServedModel

    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars per batch in a server's log
    cfg = cfg or ServeConfig()
    resolve_api_key(cfg.api_key_env)  # fail before the model loads
    app = create_app(ServedModel.from_run(run_dir), cfg)
    print(f"serving {run_dir} on http://{cfg.host}:{cfg.port} (OpenAPI at /docs, metrics at /metrics)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)


__all__ = ["ServeConfig", "serve"]
