"""The ``tuneforge`` command: a thin layer over ``tuneforge.api``, one module per command group.

argparse rather than a CLI framework: no extra dependency, ``--help`` on every subcommand, and
errors mapped to exit codes in one place (2 = bad input, 3 = training failed).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from tuneforge.accel import allocator
from tuneforge.cli import data as cli_data
from tuneforge.cli import run as cli_run
from tuneforge.cli import deploy as cli_deploy
from tuneforge.cli import recipe as cli_recipe
from tuneforge.cli import evaluate as cli_evaluate
from tuneforge.cli import fairness as cli_fairness
from tuneforge.cli import review as cli_review
from tuneforge.cli import serve as cli_serve
from tuneforge.cli import studio as cli_studio
from tuneforge.messages import describe_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneforge", description="Fine-tune a language model on your data, "
                                     "evaluate it honestly against its base, and export it.")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error as well as its message (any position on the line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cli_run.add_commands(sub)
    cli_serve.add_commands(sub)
    cli_deploy.add_commands(sub)
    cli_evaluate.add_commands(sub)  # compare, curve, sweep
    cli_data.add_commands(sub)
    cli_review.add_commands(sub)
    cli_fairness.add_commands(sub)
    cli_recipe.add_commands(sub)  # recipe import
    cli_studio.add_commands(sub)
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


if __name__ == "__main__":
    sys.exit(main())
