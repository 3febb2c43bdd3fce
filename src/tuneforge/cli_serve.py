"""argparse wiring of ``tuneforge serve`` and ``tuneforge monitor`` (kept out of the thin ``cli.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from tuneforge.errors import ConfigError
    from tuneforge.serve import ServeConfig, serve

    try:
        cfg = ServeConfig(host=args.host, port=args.port, api_key_env=args.api_key_env, max_batch=args.max_batch,
                          batch_wait_ms=args.batch_wait_ms, queue_size=args.queue_size, timeout=args.timeout,
                          max_items=args.max_items, max_text_chars=args.max_text_chars,
                          max_input_tokens=args.max_input_tokens, log_requests=args.log_requests)
    except ValidationError as err:
        problems = [f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in err.errors()]
        raise ConfigError("bad serve option: " + "; ".join(problems)) from None
    serve(args.run_dir, cfg)


def _cmd_monitor(args: argparse.Namespace) -> None:
    from tuneforge.monitor import monitor

    report = monitor(args.run_dir, args.log, out_dir=args.out, embedder=args.embedder, seed=args.seed)
    print(report["verdict"]["line"])
    print(f"report written to {report['paths']['md']}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from tuneforge.serve.config import ServeConfig

    d = ServeConfig()
    p = sub.add_parser("serve", help="serve a run over HTTP (OpenAI-compatible, batched, with /metrics)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--host", default=d.host, help=f"default {d.host} (loopback only)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="require `Authorization: Bearer <key>` with the key read from this environment variable")
    p.add_argument("--max-batch", type=int, default=d.max_batch, metavar="N", help="most examples per model call")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms, metavar="M",
                   help="how long a request waits for others to share its batch")
    p.add_argument("--queue-size", type=int, default=d.queue_size, metavar="Q", help="waiting requests beyond Q get 503")
    p.add_argument("--timeout", type=float, default=d.timeout, metavar="S", help="seconds before a request gets 504")
    p.add_argument("--max-items", type=int, default=d.max_items, metavar="N",
                   help="most texts in one /v1/classify or /v1/extract request")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars, metavar="C",
                   help="longest text, prompt or message accepted")
    p.add_argument("--max-input-tokens", type=int, default=None, metavar="T",
                   help="longest prompt a generating run accepts (default: the run's train.max_length)")
    p.add_argument("--log-requests", type=Path, default=None, metavar="FILE",
                   help="append requests and answers, personal data redacted, to this JSONL file (for monitor)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("monitor", help="compare logged live inputs with the training data; say whether to re-train")
    p.add_argument("run_dir", type=Path)
    p.add_argument("log", type=Path, help="the JSONL file written by `tuneforge serve --log-requests`")
    p.add_argument("--out", type=Path, default=None, help="folder for monitor.json and monitor.md (default RUN_DIR/monitor)")
    p.add_argument("--embedder", default="minilm-l6", help="encoder for the embedding drift test (name or folder)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_monitor)
