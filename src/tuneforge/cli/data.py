"""``tuneforge data ...``: the data-preparation commands, each a thin call into ``tuneforge.data``.

Wired into the main parser by ``add_commands(sub)``; errors reach ``cli.main`` as
``TuneforgeError``s and become exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def _audit(args: argparse.Namespace) -> None:
    from tuneforge.data.audit import AuditOptions, audit_files, render_table, write_report

    opts = AuditOptions(text_field=args.text_field, label_field=args.label_field, model=args.model,
                        max_length=args.max_length, near_threshold=args.near_threshold, neighbours=args.neighbours,
                        phone_region=args.phone_region)
    report = audit_files(args.files, test=args.test, options=opts, checks=args.checks or None)
    print(render_table(report))
    json_path, html_path = write_report(report, args.out)
    print(f"\naudited {sum(report.rows.values())} rows in {report.seconds:.1f} s; wrote {json_path} and {html_path}")


def _clean(args: argparse.Namespace) -> None:
    from tuneforge.data.clean import DEFAULT_FIXES, clean_file

    fixes = [f for spec in (args.fix or [",".join(DEFAULT_FIXES)]) for f in spec.split(",") if f]
    result = clean_file(args.file, args.output, fixes=fixes, log_path=args.log, label_field=args.label_field,
                        near_threshold=args.near_threshold)
    changes = ", ".join(f"{k}: {v}" for k, v in result.changes.items()) or "no changes"
    print(f"{result.rows_in} rows in, {result.rows_out} out ({changes})")
    print(f"wrote {result.output}; every change is in {result.log}")


def _feedback(args: argparse.Namespace) -> None:
    from tuneforge.data.feedback import feedback_from_log

    result = feedback_from_log(args.log, args.output, kind=args.kind, feedback_path=args.feedback)
    print(f"{result.feedback} answers judged: {len(result.rows)} {args.kind} rows written to {args.output}; "
          f"{len(result.unmatched)} feedback id(s) not in the log, {result.unused} judged answer(s) gave no row")


def _split(args: argparse.Namespace) -> None:
    from tuneforge.data.split_groups import split_file

    counts = split_file(args.file, args.out, validation=args.validation, test=args.test, seed=args.seed,
                        stratify_field=args.stratify, group_field=args.group)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()) + f"; written to {args.out}")


def _convert(args: argparse.Namespace) -> None:
    from tuneforge.data.convert import convert_file

    result = convert_file(args.file, args.output, to=args.to, from_=args.from_, skip_invalid=args.skip_invalid)
    print(f"converted {result.rows} rows ({result.source_format} -> {args.to}) into {result.output}")
    for problem in result.skipped:
        print(f"  skipped {problem}")


def _augment(args: argparse.Namespace) -> None:
    from tuneforge.data.augment import augment_file

    ops = [o for spec in args.ops for o in spec.split(",") if o]
    result = augment_file(args.file, args.output, ops, per_row=args.per_row, alpha=args.alpha, seed=args.seed,
                          text_field=args.text_field, test=args.test, include_original=not args.only_new,
                          model=args.model, check=_label_check(args.run, "the label check"))
    added = ", ".join(f"{k}: {v}" for k, v in result.added.items()) or "none"
    dropped = ", ".join(f"{k}: {v}" for k, v in result.dropped.items()) or "none"
    print(f"{result.rows_in} rows in; added {added}; dropped {dropped}; wrote {result.output}")


def _label_check(run: Path | None, purpose: str) -> Callable[[list[str]], list[str]] | None:
    """The predicted labels of a finished classification run (``--run``), or None without one."""
    if run is None:
        return None
    from tuneforge.run.loading import label_model

    return label_model(run, purpose).predict


def _synthesize(args: argparse.Namespace) -> None:
    from tuneforge.data.synthetic import FILTERS, synthesize

    task = args.task.read_text(encoding="utf-8") if args.task.is_file() else str(args.task)
    report = synthesize(args.seeds, args.output, task=task, per_label=args.per_label, shots=args.shots,
                        seed=args.seed, real_file=args.real, check=_label_check(args.run, "the label check"),
                        model=args.model)
    steps = " -> ".join(f"{f} {report.survivors[f]}" for f in FILTERS if f in report.survivors)
    print(f"generated {report.generated} -> {steps}; per label: {report.per_label}; wrote {args.output}")
    if args.run is None:
        print("  (no --run given: the label check was skipped)")


def _select(args: argparse.Namespace) -> None:
    from tuneforge.data.active import select_for_labelling

    from tuneforge.run.loading import label_model  # torch and the model stack: not for `tuneforge --help`

    classifier = label_model(args.run, "active learning")
    rows = select_for_labelling(classifier.labels, classifier.probabilities, args.pool, args.output, n=args.n,
                                strategy=args.strategy,
                                diversity=None if args.diversity == "none" else args.diversity,
                                embedder=args.embedder, seed=args.seed, text_field=args.text_field)
    print(f"chose {len(rows)} rows to label ({args.strategy}, diversity {args.diversity}); wrote {args.output}")
    print("fill in their 'label' field, then run `tuneforge data merge TRAIN LABELLED -o OUT`")


def _merge(args: argparse.Namespace) -> None:
    from tuneforge.data.active import merge_labelled

    added = merge_labelled(args.train, args.labelled, args.output, label_field=args.label_field)
    print(f"added {added} labelled rows; wrote {args.output}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``tuneforge data`` and its subcommands to the main parser."""
    from tuneforge.data.clean import ORDER
    from tuneforge.data.convert import FORMATS

    data = sub.add_parser("data", help="audit, clean, split, convert, augment, synthesise and choose data to label")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    p = dsub.add_parser("audit", help="duplicates, leakage, empty fields, labels, lengths, mojibake, language, "
                        "personal data, label noise, chat structure")
    p.add_argument("files", nargs="+", type=Path, help="data files (.jsonl, .json, .csv, .tsv, .parquet)")
    p.add_argument("--test", type=Path, default=None, help="held-out file: also checked for rows leaked from FILES")
    p.add_argument("--model", default=None,
                   help="tokenizer for token lengths and chat truncation (registry name or folder)")
    p.add_argument("--max-length", type=int, default=128, help="the train.max_length you plan (default 128)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default="label")
    p.add_argument("--near-threshold", type=float, default=0.8, help="MinHash Jaccard for near duplicates")
    p.add_argument("--neighbours", choices=["tfidf", "minilm"], default="tfidf", help="embedding for label noise")
    p.add_argument("--phone-region", default="US", help="region for phone numbers without +country")
    p.add_argument("--checks", nargs="*", default=None, help="run only these checks")
    p.add_argument("--out", type=Path, default=Path("audit"), help="folder for audit.json and audit.html")
    p.set_defaults(func=_audit)

    p = dsub.add_parser("clean", help="apply fixes, write a new file and a log of every change")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--fix", action="append", default=None,
                   help=f"comma-separated fixes (repeatable) from: {', '.join(ORDER)}; default: "
                   "encoding,unicode,whitespace,empty,duplicates")
    p.add_argument("--log", type=Path, default=None, help="change log (default: OUTPUT stem + .log.jsonl)")
    p.add_argument("--label-field", default="label")
    p.add_argument("--near-threshold", type=float, default=0.8)
    p.set_defaults(func=_clean)

    p = dsub.add_parser("split", help="stratified, group-aware train/validation/test split")
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for train/validation/test.jsonl")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stratify", default=None, metavar="FIELD", help="keep this field's distribution in every split")
    p.add_argument("--group", default=None, metavar="FIELD", help="rows sharing this field stay in one split")
    p.set_defaults(func=_split)

    p = dsub.add_parser("convert",
                        help="convert between chat, prompt/completion, alpaca, OpenAI and preference formats")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--to", required=True, choices=FORMATS.names())
    p.add_argument("--from", dest="from_", default="auto", choices=["auto", *FORMATS.names()])
    p.add_argument("--skip-invalid", action="store_true", help="leave out rows that cannot be converted (listed)")
    p.set_defaults(func=_convert)

    from tuneforge.data.active import STRATEGIES
    from tuneforge.data.augment import MODEL_OPS, OPS

    p = dsub.add_parser("augment", help="EDA (synonym, insert, swap, delete) and paraphrasing with a local model")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--ops", action="append", required=True,
                   help=f"comma-separated operations: {', '.join([*OPS.names(), *MODEL_OPS])}")
    p.add_argument("--per-row", type=int, default=1, help="new rows per row and EDA operation")
    p.add_argument("--alpha", type=float, default=0.1, help="share of words an EDA operation changes")
    p.add_argument("--test", type=Path, default=None, help="drop new rows that match a row of this test file")
    p.add_argument("--only-new", action="store_true", help="write only the new rows, not the originals too")
    p.add_argument("--model", default="smollm2-135m-instruct", help="instruct model for paraphrase")
    p.add_argument("--run", type=Path, default=None,
                   help="classification run whose model must confirm each new row's label")
    p.add_argument("--text-field", default="text")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_augment)

    p = dsub.add_parser("synthesize", help="new labelled rows from seeds with a local instruct model, filtered")
    p.add_argument("seeds", type=Path, help="a few labelled rows per label (text, label)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--task", type=Path, required=True, help="task description (text, or a file holding it)")
    p.add_argument("--per-label", type=int, default=10)
    p.add_argument("--shots", type=int, default=3, help="seed examples shown per prompt")
    p.add_argument("--real", type=Path, default=None, help="real data to deduplicate against (default: the seeds)")
    p.add_argument("--run", type=Path, default=None, help="classification run whose model checks the labels")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synthesize)

    p = dsub.add_parser("select", help="active learning: rank an unlabelled pool, export a batch to label")
    p.add_argument("run", type=Path, help="a finished classification run folder")
    p.add_argument("pool", type=Path, help="unlabelled rows (text)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("-n", type=int, default=20, help="batch size")
    p.add_argument("--strategy", choices=STRATEGIES.names(), default="entropy")
    p.add_argument("--diversity", choices=["none", "kmeans"], default="none")
    p.add_argument("--embedder", choices=["tfidf", "minilm"], default="tfidf", help="vectors for k-means")
    p.add_argument("--text-field", default="text")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_select)

    p = dsub.add_parser("feedback", help="a served model's request log + its feedback -> preference data (DPO/KTO)")
    p.add_argument("log", type=Path, help="the request log of `tuneforge serve --log-requests`")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--kind", choices=["pairwise", "binary"], default="pairwise",
                   help="prompt/chosen/rejected pairs (DPO) or prompt/completion/label rows (KTO)")
    p.add_argument("--feedback", type=Path, default=None, help="default: LOG's stem + .feedback.jsonl beside it")
    p.set_defaults(func=_feedback)

    p = dsub.add_parser("merge", help="append a labelled batch to the training data (as a new file)")
    p.add_argument("train", type=Path)
    p.add_argument("labelled", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--label-field", default="label")
    p.set_defaults(func=_merge)
