"""argparse wiring of ``tuneforge serve`` and ``tuneforge monitor`` (kept out of the thin ``cli.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path


SERVE_DESCRIPTION = """\
Serve a finished run over HTTP. Hardening: request bodies are counted as they stream in and
refused (413) past --max-body-bytes before parsing or authentication; validation errors name the
field and never quote the input; every answer has an X-Request-ID header and every 5xx is logged
with it; /health says only {"status": "ok"}; with --api-key-env every other path needs the key.

--log-requests redaction detectors (serve/redact.py): [SECRET] values after password, passphrase,
passcode, secret, api key, access token, token (with ':', '=' or 'is'), and 3-8 digits after pin,
pin code, cvv, cvc; from the data audit (tuneforge.data.pii): [EMAIL], [CARD] (Luhn), [IBAN]
(mod-97), [PHONE] (libphonenumber); [PHONE] for any other 7-15 digit phone-like number; [NAME]
for capitalised words after my name is, I am, I'm, this is, call me, name:, Mr, Mrs, Ms, Miss, Dr,
Dear, signed, regards; whole values of JSON keys such as name, password, pin, api_key. Names with
no cue and street addresses pass through.
"""


def _cmd_serve(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from tuneforge.errors import ConfigError
    from tuneforge.serve import ServeConfig, serve

    try:
        cfg = ServeConfig(host=args.host, port=args.port, api_key_env=args.api_key_env,
                          insecure_no_key=args.insecure_no_key, public_metrics=args.public_metrics,
                          max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, queue_size=args.queue_size,
                          timeout=args.timeout, max_items=args.max_items, max_text_chars=args.max_text_chars,
                          max_body_bytes=args.max_body_bytes, max_input_tokens=args.max_input_tokens,
                          log_requests=args.log_requests)
    except ValidationError as err:
        problems = [f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in err.errors()]
        raise ConfigError("bad serve option: " + "; ".join(problems)) from None
    serve(args.run_dir, cfg)


def _cmd_monitor(args: argparse.Namespace) -> None:
    from tuneforge.deploy.monitor import monitor

    report = monitor(args.run_dir, args.log, out_dir=args.out, embedder=args.embedder, seed=args.seed)
    print(report["verdict"]["line"])
    print(f"report written to {report['paths']['md']}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from tuneforge.serve.config import ServeConfig

    d = ServeConfig()
    p = sub.add_parser("serve", help="serve a run over HTTP (OpenAI-compatible, batched, with /metrics)",
                       description=SERVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--host", default=d.host, help=f"default {d.host} (loopback only); another address needs "
                   "--api-key-env or --insecure-no-key")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="require `Authorization: Bearer <key>` with the key read from this environment variable "
                   "(on every path but /health)")
    p.add_argument("--insecure-no-key", action="store_true",
                   help="serve beyond loopback without a key anyway (a loud warning is printed)")
    p.add_argument("--public-metrics", action="store_true",
                   help="answer /metrics, /openapi.json and /docs without the key (for a scraper on a trusted network)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, metavar="N", help="most examples per model call")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms, metavar="M",
                   help="how long a request waits for others to share its batch")
    p.add_argument("--queue-size", type=int, default=d.queue_size, metavar="Q",
                   help="waiting requests beyond Q get 503")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds before a request gets 504 (default: from the run's preflight.json, the measured "
                   "latency per item x (queue size + batch) x 2, between 120 s and an hour)")
    p.add_argument("--max-items", type=int, default=d.max_items, metavar="N",
                   help="most texts in one /v1/classify or /v1/extract request")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars, metavar="C",
                   help="longest text, prompt or message accepted")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, metavar="B",
                   help="longest request body, counted as it streams in; a longer one gets 413 before it is parsed")
    p.add_argument("--max-input-tokens", type=int, default=None, metavar="T",
                   help="longest prompt a generating run accepts (default: the run's train.max_length)")
    p.add_argument("--log-requests", type=Path, default=None, metavar="FILE",
                   help="append requests and answers to this JSONL file (for monitor), mode 0600, redacted: "
                   "secrets after password/pin/api_key cues, e-mails, Luhn-valid card numbers, IBANs, phone "
                   "numbers, names after a cue (my name is, Mr, Dear...); street addresses are not masked")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("monitor", help="compare logged live inputs with the training data; say whether to re-train")
    p.add_argument("run_dir", type=Path)
    p.add_argument("log", type=Path, help="the JSONL file written by `tuneforge serve --log-requests`")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for monitor.json and monitor.md (default RUN_DIR/monitor)")
    p.add_argument("--embedder", default="minilm-l6", help="encoder for the embedding drift test (name or folder)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_monitor)
