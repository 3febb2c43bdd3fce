"""Does data preparation help a low-data intent classifier? SNIPS with minilm-l6, 10 real rows per class.

Arms, every one scored on the same SNIPS test rows (accuracy, 95% bootstrap interval, and the paired
bootstrap difference against the 10-per-class baseline):

- ``real``: 10 real rows per class (70 rows);
- ``+eda``: the same plus one EDA row per row and operation (synonym, insert, swap, delete);
- ``+paraphrase``: the same plus one smollm2 paraphrase per row;
- ``+synthetic``: the same plus smollm2 self-instruct rows, filtered (format, dedup against all real
  training rows, label check by the ``real`` model);
- ``+active``: the same plus 20 rows chosen from a pool of unlabelled training rows by entropy with
  k-means diversity, using the ``real`` model; their gold labels play the annotator;
- ``+random``: the same plus 20 random pool rows (the baseline ``+active`` must beat).

``+active`` and ``+random`` are repeated over ``--seeds`` pool draws because 20 rows are noisy.
Run under the shared lock: ``flock /tmp/tuneforge-heavy.lock python bench/data_experiment.py``.
Writes ``bench/DATA_RESULTS.json`` and prints a Markdown table for ``bench/DATA_RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tuneforge import api
from tuneforge.data.active import select_for_labelling
from tuneforge.data.augment import augment_records
from tuneforge.data.readers import Record, read_records
from tuneforge.data.synthetic import run_label_check, synthesize
from tuneforge.evaluate.metrics import bootstrap_ci
from tuneforge.evaluate.metrics_extra import paired_bootstrap

SNIPS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "snips"
TASK = ("Users talk to a voice assistant. Each request has one intent: AddToPlaylist, BookRestaurant, GetWeather, "
        "PlayMusic, RateBook, SearchCreativeWork or SearchScreeningEvent.")


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def per_class(records: list[Record], k: int, seed: int) -> list[Record]:
    by_label: dict[str, list[Record]] = {}
    for r in records:
        by_label.setdefault(r.fields["label"], []).append(r)
    rng = random.Random(seed)
    return [r for label in sorted(by_label) for r in rng.sample(by_label[label], k)]


def train_arm(name: str, rows: list[dict[str, Any]], test: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    train = write(out / "data" / f"{name}.jsonl", [{"text": r["text"], "label": r["label"]} for r in rows])
    recipe = {"task": "classification", "model": args.model, "method": {"name": "full"},
              "data": {"train": str(train), "test": str(test), "split": {"validation": 0.0}},
              "train": {"epochs": args.epochs, "lr": args.lr, "batch_size": 16, "max_length": 64, "seed": 0},
              "eval": {"base": False, "batch_size": 64}, "output": str(out / "runs" / name)}
    start = time.perf_counter()
    result = api.train(recipe, overwrite=True, echo=lambda *_: None)
    run = result.run_dir
    refs = [json.loads(line)["fields"]["label"] for line in (run / "data" / "test.jsonl").read_text().splitlines()]
    preds = [json.loads(line)["prediction"] for line in (run / "predictions" / "tuned.jsonl").read_text().splitlines()]
    correct = [float(r == p) for r, p in zip(refs, preds)]
    acc = sum(correct) / len(correct)
    print(f"{name:<22} rows {len(rows):>4}  accuracy {acc:.4f}  ({time.perf_counter() - start:.0f}s)", flush=True)
    return {"arm": name, "rows": len(rows), "accuracy": acc, "ci": list(bootstrap_ci(correct)), "correct": correct,
            "run": str(run)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/data_experiment"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--pool", type=int, default=2000, help="unlabelled pool size for active learning")
    parser.add_argument("--seeds", type=int, default=3, help="pool draws for active vs random (0: none)")
    parser.add_argument("--synthetic-per-label", type=int, default=12)
    parser.add_argument("--skip", nargs="*", default=[], help="arms to skip (eda, paraphrase, synthetic)")
    parser.add_argument("--model", default="minilm-l6", help="encoder to fine-tune (a tiny folder for a smoke run)")
    parser.add_argument("--generator", default="smollm2-135m-instruct", help="instruct model for paraphrase/synthetic")
    parser.add_argument("--results", type=Path, default=Path("bench/DATA_RESULTS.json"))
    parser.add_argument("--check-paraphrases", action="store_true",
                        help="keep only paraphrases whose label the `real` model confirms (off in the measured run)")
    args = parser.parse_args()
    test = SNIPS / "intent_test.jsonl"
    all_train = read_records(SNIPS / "intent_train.jsonl")
    seed_rows = per_class(all_train, 10, seed=0)
    base_rows = [r.fields for r in seed_rows]
    results = [train_arm("real", base_rows, test, args.out, args)]
    base_run = results[0]["run"]
    notes: dict[str, Any] = {}
    test_texts = [r.fields["text"] for r in read_records(test)]
    chosen_ids = {r.where() for r in seed_rows}
    candidates = [r for r in all_train if r.where() not in chosen_ids]

    def active_vs_random(seed: int) -> None:
        pool = random.Random(100 + seed).sample(candidates, args.pool)
        pool_file = write(args.out / "data" / f"pool{seed}.jsonl", [{"text": r.fields["text"]} for r in pool])
        gold = {r.fields["text"]: r.fields["label"] for r in pool}
        batch = select_for_labelling(base_run, pool_file, args.out / "data" / f"batch{seed}.jsonl", n=20,
                                     strategy="entropy", diversity="kmeans", seed=seed)
        active = [{"text": b["text"], "label": gold[b["text"]]} for b in batch]
        rand = [{"text": r.fields["text"], "label": r.fields["label"]} for r in random.Random(seed).sample(pool, 20)]
        notes[f"active seed {seed}"] = {"labels chosen": dict(sorted(Counter(r["label"] for r in active).items())),
                                        "random labels": dict(sorted(Counter(r["label"] for r in rand).items()))}
        results.append(train_arm(f"+20 active (seed {seed})", base_rows + active, test, args.out, args))
        results.append(train_arm(f"+20 random (seed {seed})", base_rows + rand, test, args.out, args))
        save(results, notes, args)

    if args.seeds > 0:
        active_vs_random(0)
    if "eda" not in args.skip:
        new, added, dropped = augment_records(seed_rows, ["synonym", "insert", "swap", "delete"], seed=0,
                                              test=test_texts)
        notes["eda"] = {"added": added, "dropped": dropped,
                        "examples": [r["text"] for r in new[:: max(1, len(new) // 8)]]}
        results.append(train_arm("+eda", base_rows + new, test, args.out, args))
        save(results, notes, args)
    if "synthetic" not in args.skip:
        seeds_file = write(args.out / "data" / "seeds.jsonl", base_rows)
        start = time.perf_counter()
        report = synthesize(seeds_file, args.out / "data" / "synthetic.jsonl", task=TASK,
                            per_label=args.synthetic_per_label, real_file=SNIPS / "intent_train.jsonl",
                            run_dir=base_run,
                            model=args.generator)
        notes["synthetic"] = {"generated": report.generated, "survivors": report.survivors,
                              "per_label": report.per_label,
                              "seconds": round(time.perf_counter() - start),
                              "examples": [r["text"] + " -> " + r["label"] for r in report.rows[:8]],
                              "rejected_examples": {k: v[:4] for k, v in report.rejected.items()}}
        results.append(train_arm("+synthetic", base_rows + report.rows, test, args.out, args))
        save(results, notes, args)
    if "paraphrase" not in args.skip:
        start = time.perf_counter()
        check = run_label_check(base_run) if args.check_paraphrases else None
        new, added, dropped = augment_records(seed_rows, ["paraphrase"], test=test_texts, model=args.generator,
                                              check=check)
        notes["paraphrase"] = {"added": added, "dropped": dropped, "seconds": round(time.perf_counter() - start),
                               "examples": [r["text"] for r in new[:8]]}
        results.append(train_arm("+paraphrase", base_rows + new, test, args.out, args))
        save(results, notes, args)
    for seed in range(1, args.seeds):
        active_vs_random(seed)
    print(table(results))
    print(json.dumps(notes, indent=1, ensure_ascii=False))


def save(results: list[dict[str, Any]], notes: dict[str, Any], args: argparse.Namespace) -> None:
    """Rewrite the results file after every arm, so a run cut short still leaves what it measured."""
    base = results[0]["correct"]
    rows = []
    for r in results:
        d = paired_bootstrap(base, r["correct"]) if r is not results[0] else None
        rows.append({**{k: v for k, v in r.items() if k != "correct"}, "vs_real": d})
    args.results.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "notes": notes,
                                        "results": rows}, indent=2, ensure_ascii=False))


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]["correct"]
    lines = ["| arm | train rows | accuracy | 95% CI | difference vs real [95% CI] |", "|---|---|---|---|---|"]
    for r in results:
        d = paired_bootstrap(base, r["correct"]) if r is not results[0] else None
        diff = "-" if d is None else f"{d['mean_diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
        ci = f"[{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]"
        lines.append(f"| {r['arm']} | {r['rows']} | {r['accuracy']:.4f} | {ci} | {diff} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
