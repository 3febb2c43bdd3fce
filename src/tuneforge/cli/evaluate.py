"""CLI wiring of the evaluate-and-iterate commands: compare, curve, sweep. Each calls the Python API."""

from __future__ import annotations

import argparse
from pathlib import Path


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_compare(args: argparse.Namespace) -> None:
    from tuneforge.evaluate.compare import compare
    from tuneforge.run.composed import finished_run

    compare(finished_run(args.target), baselines=_csv(args.baselines), k=args.k, prompt_items=args.prompt_items,
            prompt_model=args.prompt_model, seed=args.seed, output=args.output,
            runs=[Path(r) for r in _csv(args.runs)] if args.runs else None)


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
    p.add_argument("--runs", default=None, help="comma-separated other run folders (same test rows) to add to the table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=None, help="default: RUN/compare")
    p.set_defaults(func=_cmd_compare)
    add_curve(sub)
    add_sweep(sub)
    add_robustness(sub)


def _cmd_sweep(args: argparse.Namespace) -> None:
    from tuneforge.run.sweep import sweep

    sweep(args.recipe, args.space, trials=args.trials, sampler=args.sampler, minutes=args.minutes,
          storage=args.storage, fraction=args.fraction, output=args.output, study_name=args.study, seed=args.seed,
          overrides=args.set, workers=args.workers)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="hyperparameter search over recipe fields with Optuna (pruning, SQLite, resumable)")
    p.add_argument("recipe", type=Path)
    p.add_argument("--space", type=Path, required=True, help="YAML: metric, evaluations, params (dotted recipe paths)")
    p.add_argument("--trials", type=int, default=20, help="total trials wanted in the study (default 20)")
    p.add_argument("--sampler", choices=["grid", "random", "tpe"], default="tpe")
    p.add_argument("--minutes", type=float, default=None, help="stop starting new trials after this many minutes")
    p.add_argument("--storage", default=None, help="Optuna storage URL; default sqlite:///OUTPUT/study.db")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="score each trial on this fraction of its training run (Oliver and Wang, 2024)")
    p.add_argument("--study", default=None, help="study name inside the storage (default 'tuneforge')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1,
                   help="trials run at once, each in its own process sharing the study store (default 1)")
    p.add_argument("-o", "--output", type=Path, default=None, help="default: OUTPUT-sweep beside the recipe's output")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    p.set_defaults(func=_cmd_sweep)


def _cmd_curve(args: argparse.Namespace) -> None:
    from tuneforge.run.curve import learning_curve

    learning_curve(args.recipe, [float(f) for f in _csv(args.fractions)], metric=args.metric, output=args.output,
                   overrides=args.set)


def add_curve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curve", help="learning curve: fine-tune on growing subsets, fit what more data would buy")
    p.add_argument("recipe", type=Path)
    p.add_argument("--fractions", default="0.1,0.25,0.5,1.0", help="comma-separated fractions of the training split")
    p.add_argument("--metric", default=None, help="test metric to plot (default: the task's first headline metric)")
    p.add_argument("-o", "--output", type=Path, default=None, help="default: OUTPUT-curve beside the recipe's output")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    p.set_defaults(func=_cmd_curve)


def _cmd_robustness(args: argparse.Namespace) -> None:
    from tuneforge.evaluate.robustness import robustness

    robustness(args.run_dir, perturbations=_csv(args.perturbations) if args.perturbations else None, seed=args.seed)


def add_robustness(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("robustness", help="score the tuned model on typo/case/whitespace/truncation-perturbed inputs")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--perturbations", default=None,
                   help="comma-separated: typos, lowercase, uppercase, whitespace, truncate (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_robustness)
