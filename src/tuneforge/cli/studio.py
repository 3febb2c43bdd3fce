"""``tuneforge studio``: the local web app over the same Python API (see docs/studio.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

TOKEN_ENV = "TUNEFORGE_STUDIO_TOKEN"


def cmd_studio(args: argparse.Namespace) -> None:
    import uvicorn

    from tuneforge.studio.app import create_app
    from tuneforge.studio.security import is_loopback

    if args.port < 0 or args.port > 65535:
        raise UserError(f"--port: {args.port} is not a port number (0-65535)")
    if args.max_upload_mb <= 0:
        raise UserError("--max-upload-mb must be positive")
    token = os.environ.get(TOKEN_ENV) or None
    app = create_app(args.runs, host=args.host, token=token, max_upload_mb=args.max_upload_mb)
    guard = app.state.studio.guard
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    if is_loopback(args.host):
        print(f"tuneforge studio on {url} (loopback only), runs under {app.state.studio.root}")
    else:
        shown = "(the token in $" + TOKEN_ENV + ")" if token else guard.token
        print(f"tuneforge studio on {url}?token={shown}\n  bound beyond loopback: every request needs this token; "
              "it is printed only now")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("studio", help="a local web app: runs, live training, reports, compare, data, recipes, review")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="the folder of runs the studio shows and "
                   "writes (default ./runs); it reads no file outside it")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only); any other address "
                   f"requires a token (printed once, or set in ${TOKEN_ENV})")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest data file an upload may be")
    p.set_defaults(func=cmd_studio)
