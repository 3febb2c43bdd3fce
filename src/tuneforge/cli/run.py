"""The core commands: train, eval, predict, export, models, demo, schema."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_train(args: argparse.Namespace) -> None:
    from tuneforge import api

    api.train(args.recipe, resume=args.resume, dry_run=args.dry_run, overwrite=args.overwrite, overrides=args.set)


def cmd_eval(args: argparse.Namespace) -> None:
    from tuneforge import api

    api.evaluate(args.run_dir)


def cmd_predict(args: argparse.Namespace) -> None:
    from tuneforge import api

    out = api.predict(args.run_dir, args.input, args.output, base=args.base)
    print(f"predictions written to {out}")


def cmd_export(args: argparse.Namespace) -> None:
    from tuneforge import api

    out = api.export(args.run_dir, args.output, overwrite=args.overwrite, format=args.format, force=args.force,
                     **({"gguf_type": args.gguf_type} if args.format == "gguf" else {}))
    print(f"exported the model ({args.format}) to {out}")


def cmd_models(args: argparse.Namespace) -> None:
    from tuneforge.api import list_models

    rows = [("name", "kind", "architecture", "params", "licence", "tasks")]
    rows += [(m.name, m.kind, m.architecture, f"{m.params / 1e6:.0f}M", m.licence, ", ".join(m.tasks))
             for m in list_models()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nAny local Hugging Face folder also works as `model:`.")


def cmd_demo(args: argparse.Namespace) -> None:
    from tuneforge.run.demo import run_demo

    run_demo(args.output, overwrite=args.overwrite, dry_run=args.dry_run)


def cmd_schema(args: argparse.Namespace) -> None:
    import json

    from tuneforge.recipe import json_schema

    print(json.dumps(json_schema(), indent=2))


def add_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="fine-tune as a YAML recipe says, then report base vs tuned")
    p.add_argument("recipe", type=Path, help="the YAML recipe")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run from its last checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the preflight and resolved recipe; train nothing")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier tuneforge run at `output` (a folder tuneforge did not write, "
                        "and the root, home or current folder, are never deleted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.lr=3e-4 (repeatable)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="re-score base and tuned model on the run's test split")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="batch inference on a JSONL/CSV/Parquet file")
    p.add_argument("run_dir", type=Path)
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None, help="default: INPUT.predictions.jsonl")
    p.add_argument("--base", action="store_true", help="predict with the untouched base model instead")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a standalone Hugging Face folder (safetensors, LoRA merged)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None, help="default: RUN_DIR/export")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier tuneforge export at the output (never a folder tuneforge did not write)")
    p.add_argument("--format", choices=["hf", "gguf", "onnx"], default="hf",
                   help="hf: safetensors folder; gguf: llama decoders; onnx: classifiers")
    p.add_argument("--gguf-type", choices=["f32", "f16", "q8_0"], default="f16", help="GGUF weight type")
    p.add_argument("--force", action="store_true", help="export even if the model fails the recipe's eval.golden cases")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list the registry of base models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="LoRA-tune smollm2-135m-instruct on product listings -> JSON, before/after")
    p.add_argument("-o", "--output", type=Path, default=Path("runs/demo"))
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run (default: yes if finished)")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("schema", help="print the recipe's JSON Schema")
    p.set_defaults(func=cmd_schema)
