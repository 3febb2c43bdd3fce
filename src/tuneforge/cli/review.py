"""``tuneforge review export|import``: blind side-by-side human review, a thin call into ``evaluate.review``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _export(args: argparse.Namespace) -> None:
    from tuneforge.evaluate.review import items_from_runs, make_sheet, write_sheet

    systems, items = items_from_runs(args.run_a, args.run_b)
    sheet = make_sheet(systems, items, args.n, seed=args.seed)
    paths = write_sheet(sheet, args.output, args.key)
    print(f"{len(sheet.rows)} items of {systems[0]} vs {systems[1]}, sides shuffled (seed {args.seed})")
    print(f"raters: {paths['html']} (offline form) or {paths['csv']}; keep {paths['key']} away from them")


def _import(args: argparse.Namespace) -> None:
    from tuneforge.evaluate.review import preference_pairs, read_key, read_ratings, summarise, summary_text
    from tuneforge.files import write_json_atomic, write_jsonl_atomic

    systems, key = read_key(args.key)
    ratings = read_ratings(args.sheets, key)
    summary = summarise(ratings, systems)
    print(summary_text(summary))
    if args.pairs is not None:
        pairs = preference_pairs(ratings, key)
        write_jsonl_atomic(args.pairs, pairs)
        print(f"wrote {len(pairs)} preference pairs (ties left out) to {args.pairs}")
    if args.summary is not None:
        write_json_atomic(args.summary, summary)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``review export`` and ``review import`` on the ``tuneforge`` parser."""
    review = sub.add_parser("review", help="blind human review of two systems' answers: export a sheet, import ratings")
    rsub = review.add_subparsers(dest="review_command", required=True, metavar="ACTION")
    p = rsub.add_parser("export", help="a blind side-by-side sheet (offline HTML form + CSV) and its key, kept apart")
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="a finished run: its tuned model is system A")
    p.add_argument("run_b", type=Path, nargs="?", default=None, metavar="RUN_B",
                   help="another run on the same test items (default: RUN_A's base model)")
    p.add_argument("-n", type=int, default=50, help="items to review (seeded sample; default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=Path("review"), help="folder for the sheet (default review/)")
    p.add_argument("--key", type=Path, default=None, help="where the answer key goes (default OUTPUT/key.json)")
    p.set_defaults(func=_export)
    p = rsub.add_parser("import", help="win/tie/loss with an interval, Cohen's kappa, and preference pairs")
    p.add_argument("sheets", type=Path, nargs="+", metavar="SHEET", help="filled sheets (CSV), one per rater")
    p.add_argument("--key", type=Path, required=True, help="the key written by `review export`")
    p.add_argument("-o", "--pairs", type=Path, default=None, help="write the ratings as preference pairs (JSONL)")
    p.add_argument("--summary", type=Path, default=None, help="write the summary as JSON")
    p.set_defaults(func=_import)
