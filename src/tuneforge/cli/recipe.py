"""``tuneforge recipe import``: an Axolotl or LLaMA-Factory config as the equivalent tuneforge recipe."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_import(args: argparse.Namespace) -> None:
    from tuneforge.errors import ConfigError
    from tuneforge.recipe_import import import_config

    imported = import_config(args.config, source=args.source, world_size=args.world_size)
    out: Path = args.output or args.config.with_name(args.config.stem + ".tuneforge.yaml")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite or another -o")
    out.write_text(imported.yaml_text(), encoding="utf-8")
    print(f"wrote {out} (from a {imported.source} config)")
    for note in imported.notes:
        print(f"  note: {note}")
    if imported.unmapped:
        print(f"not mapped ({len(imported.unmapped)}):")
        for item in imported.unmapped:
            print(f"  - {item}")
    else:
        print("every key was mapped")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``tuneforge recipe`` and its subcommands to the main parser."""
    recipe = sub.add_parser("recipe", help="bring recipes in from other tools")
    rsub = recipe.add_subparsers(dest="recipe_command", required=True, metavar="RECIPE_COMMAND")
    p = rsub.add_parser("import", help="write the tuneforge recipe equivalent to an Axolotl or LLaMA-Factory YAML "
                        "config, and list what could not be mapped")
    p.add_argument("config", type=Path, help="the other tool's YAML config")
    p.add_argument("-o", "--output", type=Path, default=None, help="recipe to write (default: CONFIG.tuneforge.yaml)")
    p.add_argument("--source", choices=["axolotl", "llama-factory"], default=None,
                   help="which tool wrote CONFIG (default: told from its keys)")
    p.add_argument("--world-size", type=int, default=1,
                   help="GPUs the config ran on: train.batch_size is global, so it is the per-device batch x this")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import)
