"""The ``tuneforge`` command: a thin layer over ``tuneforge.api``.

argparse rather than a CLI framework: no extra dependency, ``--help`` on every subcommand, and
errors mapped to exit codes in one place (2 = bad input, 3 = training failed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tuneforge import allocator, cli_data, cli_deploy, cli_evaluate, cli_serve
from tuneforge.errors import TuneforgeError


def _cmd_train(args: argparse.Namespace) -> None:
    from tuneforge import api

    api.train(args.recipe, resume=args.resume, dry_run=args.dry_run, overwrite=args.overwrite, overrides=args.set)


def _cmd_eval(args: argparse.Namespace) -> None:
    from tuneforge import api

    api.evaluate(args.run_dir)


def _cmd_predict(args: argparse.Namespace) -> None:
    from tuneforge import api

    out = api.predict(args.run_dir, args.input, args.output, base=args.base)
    print(f"predictions written to {out}")


def _cmd_export(args: argparse.Namespace) -> None:
    from tuneforge import api

    out = api.export(args.run_dir, args.output, overwrite=args.overwrite, format=args.format, force=args.force,
                     **({"gguf_type": args.gguf_type} if args.format == "gguf" else {}))
    print(f"exported the model ({args.format}) to {out}")


def _cmd_models(args: argparse.Namespace) -> None:
    from tuneforge.api import list_models

    rows = [("name", "kind", "architecture", "params", "licence", "tasks")]
    rows += [(m.name, m.kind, m.architecture, f"{m.params / 1e6:.0f}M", m.licence, ", ".join(m.tasks))
             for m in list_models()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nAny local Hugging Face folder also works as `model:`.")


def _cmd_demo(args: argparse.Namespace) -> None:
    from tuneforge.demo import run_demo

    run_demo(args.output, overwrite=args.overwrite, dry_run=args.dry_run)


def _cmd_schema(args: argparse.Namespace) -> None:
    import json

    from tuneforge.recipe import json_schema

    print(json.dumps(json_schema(), indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneforge", description="Fine-tune a language model on your data, "
                                     "evaluate it honestly against its base, and export it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="fine-tune as a YAML recipe says, then report base vs tuned")
    p.add_argument("recipe", type=Path, help="the YAML recipe")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run from its last checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the preflight and resolved recipe; train nothing")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier tuneforge run at `output` (a folder tuneforge did not write, "
                        "and the root, home or current folder, are never deleted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.lr=3e-4 (repeatable)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="re-score base and tuned model on the run's test split")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="batch inference on a JSONL/CSV/Parquet file")
    p.add_argument("run_dir", type=Path)
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None, help="default: INPUT.predictions.jsonl")
    p.add_argument("--base", action="store_true", help="predict with the untouched base model instead")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="write a standalone Hugging Face folder (safetensors, LoRA merged)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None, help="default: RUN_DIR/export")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier tuneforge export at the output (never a folder tuneforge did not write)")
    p.add_argument("--format", choices=["hf", "gguf", "onnx"], default="hf",
                   help="hf: safetensors folder; gguf: llama decoders; onnx: classifiers")
    p.add_argument("--gguf-type", choices=["f32", "f16", "q8_0"], default="f16", help="GGUF weight type")
    p.add_argument("--force", action="store_true", help="export even if the model fails the recipe's eval.golden cases")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("models", help="list the registry of base models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("demo", help="LoRA-tune smollm2-135m-instruct on product listings -> JSON, before/after")
    p.add_argument("-o", "--output", type=Path, default=Path("runs/demo"))
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run (default: yes if finished)")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("schema", help="print the recipe's JSON Schema")
    p.set_defaults(func=_cmd_schema)
    cli_serve.add_commands(sub)
    cli_deploy.add_commands(sub)
    cli_evaluate.add_commands(sub)  # compare, curve, sweep
    cli_data.add_commands(sub)
    for command in sub.choices.values():  # any command that trains or scores may meet a recipe naming code
        command.add_argument("--allow-code", action="store_true",
                             help="let Python code the recipe names run (rl.reward: module:function)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        if argv is None:  # the command's own process: start again with a better malloc if there is one
            allocator.relaunch()
        args = build_parser().parse_args(argv)
        if args.allow_code:  # read by tuneforge.tasks.rewards (ALLOW_CODE_ENV), also in child processes
            os.environ["TUNEFORGE_ALLOW_CODE"] = "1"
        args.func(args)
    except TuneforgeError as err:
        print(f"tuneforge: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("tuneforge: interrupted; `tuneforge train RECIPE --resume` continues from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
