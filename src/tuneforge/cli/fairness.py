"""``tuneforge fairness RUN``: group gaps and counterfactual swaps on a run's test split (``evaluate.fairness``);
writes ``fairness.json`` and ``fairness.md`` into the run and refreshes its model card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError


def _pairs(path: Path | None, replace: bool) -> list[list[str]]:
    """The default term pairs, extended (or replaced, with --only-terms) by a JSON list of [term, term] pairs."""
    from tuneforge.evaluate.fairness import DEFAULT_TERMS

    own: Any = []
    if path is not None:
        try:
            own = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"--terms {path}: not JSON ({err.msg}); give a list of [term, counterpart] pairs") from None
        if not isinstance(own, list) or not all(isinstance(p, list) and len(p) == 2 for p in own):
            raise UserError(f"--terms {path}: give a JSON list of [term, counterpart] pairs, e.g. [[\"he\", \"she\"]]")
    return own if replace else [list(p) for p in DEFAULT_TERMS] + own


def _fairness(args: argparse.Namespace) -> None:
    from tuneforge.run.loading import load_run, load_split
    from tuneforge.evaluate.fairness import check_fairness, fairness_markdown
    from tuneforge.evaluate.report_page import slice_fields
    from tuneforge.files import write_json_atomic, write_text_atomic
    from tuneforge.run.model_card import FAIRNESS_FILE, write_model_card
    from tuneforge.run.splits import load_saved_split

    pairs = _pairs(args.terms, args.only_terms)
    loaded = load_run(args.run)
    test = load_split(args.run, loaded.task, "test")
    names = args.slice_by or loaded.task.settings.eval.slice_by
    fields = slice_fields(load_saved_split(Path(args.run) / "data", "test"), names, "the test split") if names else {}
    result = check_fairness(loaded.task, loaded.model, test, fields, pairs)
    write_json_atomic(Path(args.run) / FAIRNESS_FILE, result)
    write_text_atomic(Path(args.run) / "fairness.md", fairness_markdown(result))
    write_model_card(args.run)
    print(fairness_markdown(result))


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``fairness`` on the ``tuneforge`` parser."""
    p = sub.add_parser("fairness", help="per-group score gaps and counterfactual swaps of group terms on a run")
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run folder")
    p.add_argument("--slice-by", action="append", default=None, metavar="FIELD",
                   help="a test-data field whose groups to compare (repeatable; default: the recipe's eval.slice_by)")
    p.add_argument("--terms", type=Path, default=None, help="JSON list of [term, counterpart] pairs to swap as well")
    p.add_argument("--only-terms", action="store_true", help="swap only the --terms pairs, not the built-in ones")
    p.set_defaults(func=_fairness)
