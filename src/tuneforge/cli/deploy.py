"""CLI wiring for deployment: ``tuneforge compress`` and ``tuneforge runs ...`` (the run catalogue).

Thin, like ``cli.py``: each command parses its arguments and calls one API function.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _cmd_compress(args: argparse.Namespace) -> None:
    from tuneforge.run.compress import compress

    options = ("sparsity", "recovery_steps", "recovery_lr", "group_size", "latency_repeats")
    cfg = {"method": args.method, **{k: getattr(args, k) for k in options if getattr(args, k) is not None}}
    result = compress(args.run_dir, cfg, args.output, overwrite=args.overwrite)
    print(f"compressed run folder: {result.out_dir}")


def _registry(args: argparse.Namespace) -> Any:
    from tuneforge.run.catalogue import RunRegistry

    return RunRegistry(args.db)


def _fmt_metrics(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items())


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _cmd_runs_add(args: argparse.Namespace) -> None:
    reg = _registry(args)
    for run_dir in args.run_dirs:
        entry = reg.add(run_dir)
        print(f"registered run {entry.id}: {entry.path}")


def _cmd_runs_export(args: argparse.Namespace) -> None:
    from tuneforge.run.tracking import export_catalogue

    ids = export_catalogue(_registry(args), args.mlflow, args.experiment)
    print(f"copied {len(ids)} run(s) into the MLflow store {args.mlflow} (experiment {args.experiment!r})")


def _cmd_runs_list(args: argparse.Namespace) -> None:
    entries = _registry(args).list(tag=args.tag, task=args.task)
    if not entries:
        print("no runs registered; add one with `tuneforge runs add RUN_DIR`")
        return
    rows = [["id", "name", "task", "model", "method", "state", "headline (tuned)", "tags", "production"]]
    rows += [[str(e.id), e.name, e.task, e.model, e.method + (f"+{e.compression}" if e.compression else ""), e.state,
              _fmt_metrics(e.headline()), ",".join(e.tags), ",".join(e.production)] for e in entries]
    print(_table(rows))


def _cmd_runs_show(args: argparse.Namespace) -> None:
    reg = _registry(args)
    entry = reg.get(args.ref)
    data = {k: v for k, v in entry.__dict__.items()}
    data["history"] = {name: reg.history(name) for name in entry.production}
    print(json.dumps(data, indent=2))


def _cmd_runs_compare(args: argparse.Namespace) -> None:
    result = _registry(args).compare(args.refs)
    rows = [["metric", *(f"{e.id}:{e.name}" for e in result["runs"])]]
    for metric in result["metrics"]:
        cells = []
        for e in result["runs"]:
            value = e.summary.get("tuned", {}).get(metric)
            ci = e.summary.get("intervals", {}).get(metric, {}).get("tuned")
            cells.append("-" if value is None else f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        rows.append([metric, *cells])
    print(_table(rows))
    if not result["same_test_split"]:
        print("\nwarning: these runs were not scored on the same test split (data/fingerprints.json differs), "
              "so their numbers are not directly comparable")


def _cmd_runs_tag(args: argparse.Namespace) -> None:
    entry = _registry(args).tag(args.ref, args.tags, remove=args.remove)
    print(f"run {entry.id} tags: {', '.join(entry.tags) or '(none)'}")


def _cmd_runs_promote(args: argparse.Namespace) -> None:
    promo = _registry(args).promote(args.ref, args.name, args.note)
    replaced = f"; it replaced run {promo['replaced']}" if promo["replaced"] is not None else " (the first one)"
    print(f"run {promo['run']} is now in production as {args.name!r}{replaced}")


def _cmd_runs_history(args: argparse.Namespace) -> None:
    hist = _registry(args).history(args.name)
    if not hist:
        print(f"nothing was ever promoted as {args.name!r}")
    for h in hist:
        print(f"{h['promoted_at']}  run {h['run_id']}  replaced {h['replaced_run_id'] or '-'}  {h['note'] or ''}".rstrip())


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("compress", help="quantise or prune a finished run; report quality, latency and size "
                       "against the uncompressed model")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--method", required=True,
                   choices=["int8-dynamic", "weight-int8", "weight-int4", "prune-magnitude", "prune-structured"])
    # unset options take their defaults from tuneforge.compress.base.CompressConfig (one place)
    p.add_argument("--sparsity", type=float, help="pruning: share of weights / FFN neurons removed")
    p.add_argument("--recovery-steps", type=int, help="pruning: fine-tuning steps after pruning")
    p.add_argument("--recovery-lr", type=float, help="pruning: learning rate of the recovery steps")
    p.add_argument("--group-size", type=int, help="weight-int4: weights sharing one scale")
    p.add_argument("--latency-repeats", type=int, help="timed passes per model, alternating (median reported)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the new run-like folder")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_compress)

    runs = sub.add_parser("runs", help="the local run catalogue (SQLite): list, show, compare, tag, promote")
    runs.add_argument("--db", type=Path, default=None,
                      help="catalogue file (default $TUNEFORGE_REGISTRY or ~/.local/share/tuneforge/runs.sqlite)")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    r = rsub.add_parser("add", help="register existing run folders")
    r.add_argument("run_dirs", type=Path, nargs="+")
    r.set_defaults(func=_cmd_runs_add)
    r = rsub.add_parser("list", help="every registered run with its headline metrics")
    r.add_argument("--tag", default=None)
    r.add_argument("--task", default=None)
    r.set_defaults(func=_cmd_runs_list)
    r = rsub.add_parser("show", help="one run in full (JSON)")
    r.add_argument("ref", help="run id, path, or folder name")
    r.set_defaults(func=_cmd_runs_show)
    r = rsub.add_parser("compare", help="headline metrics of runs side by side")
    r.add_argument("refs", nargs="+")
    r.set_defaults(func=_cmd_runs_compare)
    r = rsub.add_parser("tag", help="add (or --remove) tags")
    r.add_argument("ref")
    r.add_argument("tags", nargs="+")
    r.add_argument("--remove", action="store_true")
    r.set_defaults(func=_cmd_runs_tag)
    r = rsub.add_parser("promote", help="make a run the production model for a name (history kept)")
    r.add_argument("ref")
    r.add_argument("--name", required=True, help="what the model is in production as, e.g. intent-classifier")
    r.add_argument("--note", default=None)
    r.set_defaults(func=_cmd_runs_promote)
    r = rsub.add_parser("export", help="copy the catalogue into an MLflow store (recipe as parameters, headline "
                        "as metrics)")
    r.add_argument("--mlflow", required=True, metavar="TRACKING_URI",
                   help="the MLflow store: a folder (file:///path/mlruns), or an http(s):// tracking server")
    r.add_argument("--experiment", default="tuneforge")
    r.set_defaults(func=_cmd_runs_export)
    r = rsub.add_parser("history", help="every promotion for a name, oldest first")
    r.add_argument("name")
    r.set_defaults(func=_cmd_runs_history)
