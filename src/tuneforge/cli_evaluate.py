"""CLI wiring of the evaluate-and-iterate commands: compare, curve, sweep. Each calls the Python API."""

from __future__ import annotations

import argparse
from pathlib import Path


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_compare(args: argparse.Namespace) -> None:
    from tuneforge.evaluate.compare import compare

    compare(args.target, baselines=_csv(args.baselines), k=args.k, prompt_items=args.prompt_items,
            prompt_model=args.prompt_model, seed=args.seed, output=args.output)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``compare``, ``curve`` and ``sweep`` on the ``tuneforge`` parser."""
    p = sub.add_parser("compare", help="the fine-tune beside zero-shot, few-shot, retrieval, kNN and TF-IDF baselines")
    p.add_argument("target", type=Path, metavar="RECIPE_OR_RUN", help="a finished run folder, or a recipe (trained first)")
    p.add_argument("--baselines", default="zero-shot,few-shot,retrieval,knn,tfidf",
                   help="comma-separated: zero-shot, zero-shot-prompt, few-shot, retrieval, knn, tfidf")
    p.add_argument("--k", type=int, default=5, help="examples per prompt / neighbours per vote (default 5)")
    p.add_argument("--prompt-items", type=int, default=None,
                   help="score the decoder-prompting baselines on a seeded sample of this many test items")
    p.add_argument("--prompt-model", default="smollm2-135m-instruct",
                   help="decoder for prompting baselines when the run's model is an encoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=None, help="default: RUN/compare")
    p.set_defaults(func=_cmd_compare)
