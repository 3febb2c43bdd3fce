"""The ``tuneforge`` command: a thin layer over ``tuneforge.api``.

argparse rather than a CLI framework: no extra dependency, ``--help`` on every subcommand, and
errors mapped to exit codes in one place (2 = bad input, 3 = training failed).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
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
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error as well as its message (any position on the line)")
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
    """Run one command; every failure ends as one line on stderr and an exit code, never a traceback.

    ``--debug`` (anywhere on the line, or ``TUNEFORGE_DEBUG=1``) prints the traceback as well.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get("TUNEFORGE_DEBUG", "") not in ("", "0")
    args_list = [a for a in args_list if a != "--debug"]  # a global flag: accepted after the command too
    try:
        if argv is None:  # the command's own process: start again with a better malloc if there is one
            allocator.relaunch()
        args = build_parser().parse_args(args_list)
        if args.allow_code:  # read by tuneforge.tasks.rewards (ALLOW_CODE_ENV), also in child processes
            os.environ["TUNEFORGE_ALLOW_CODE"] = "1"
        args.func(args)
    except KeyboardInterrupt:
        print("tuneforge: interrupted; `tuneforge train RECIPE --resume` continues from the last checkpoint",
              file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place every error becomes a message
        if debug:
            traceback.print_exc()
        message, code = describe_error(err)
        print(message, file=sys.stderr)
        return code
    return 0


def describe_error(err: BaseException) -> tuple[str, int]:
    """The line a user sees for ``err`` and the exit code: 2 for anything the input or the system caused.

    Errors tuneforge raises on purpose carry their own message. A file-system failure (permission
    denied, disk full, a folder where a file was expected) names the path; a RecursionError or a
    UnicodeError can only come from an input nested too deeply or not valid text. Anything else is
    a bug: one line, and the traceback behind ``--debug``.
    """
    if isinstance(err, TuneforgeError):
        return f"tuneforge: error: {err}", err.exit_code
    if isinstance(err, OSError):
        return f"tuneforge: error: {_os_error(err)}", 2
    if isinstance(err, RecursionError):
        return ("tuneforge: error: an input is nested too deeply to read (a recipe, data row or file with "
                "thousands of levels of brackets); flatten it"), 2
    if isinstance(err, UnicodeError):
        return f"tuneforge: error: text that is not valid Unicode ({_one_line(err)}); re-save the input as UTF-8", 2
    if isinstance(err, MemoryError):
        return "tuneforge: error: out of memory; use smaller inputs, train.batch_size or train.max_length", 2
    return (f"tuneforge: internal error: {type(err).__name__}: {_one_line(err)} "
            "(rerun with --debug for the traceback)"), 1


_OS_HINTS = {errno.ENOSPC: "free some disk space and rerun", errno.EDQUOT: "free some disk space and rerun",
             errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
             errno.EROFS: "the file system is read-only; pick another folder",
             errno.EISDIR: "give a file path, not a folder", errno.ENOTDIR: "a part of the path is a file, not a folder",
             errno.ENOENT: "check the path"}


def _os_error(err: OSError) -> str:
    """``<what went wrong>: <path>[ -> <path>]; <what to do>`` for a file-system error."""
    what = err.strerror or _one_line(err) or type(err).__name__
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    hint = _OS_HINTS.get(err.errno or -1)
    return what + (f": {' -> '.join(paths)}" if paths else "") + (f"; {hint}" if hint else "")


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
