"""Strong by default: each row a three-line recipe (task, model, data; no method, no train), judged on held-out data.

    flock /tmp/tuneforge-heavy.lock python bench/quality.py --row hwu64     # one row, under the heavy lock
    python bench/quality.py --write                                         # rebuild bench/QUALITY_RESULTS.md

Each row trains ``tuneforge train`` on the row's recipe in this process (the wall time is the whole
``api.train`` call: load, base scoring, head start, training, tuned scoring, baselines) and reads the run's
``report.json``: the tuned accuracy, the cheap baselines (kNN over the base model's own embeddings, TF-IDF +
logistic regression) scored on the same test items with paired intervals, the verdict line, the choices the
defaults made and the wall time of each phase. The row passes when it clears its bar (``ROWS``). Results go
to ``bench/results/quality-<row>.json``; ``--write`` turns every such file into the table of
``bench/QUALITY_RESULTS.md`` (between the ``<!-- table -->`` markers; the notes around it are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
if not DATA.is_dir():
    DATA = Path("/work/shared/datasets")
RESULTS = ROOT / "bench" / "results"
MD = ROOT / "bench" / "QUALITY_RESULTS.md"


@dataclass(frozen=True)
class Row:
    name: str
    model: str
    train: str
    test: str
    min_accuracy: float
    max_seconds: float
    beat_baselines: bool


ROWS = {
    "hwu64": Row("hwu64", "minilm-l6", "hwu64/intent_train_20shot.jsonl", "hwu64/intent_test.jsonl", 0.85, 300, True),
    "snips": Row("snips", "minilm-l6", "snips/intent_train.jsonl", "snips/intent_test.jsonl", 0.985, 300, False),
}


def recipe(row: Row, out: Path) -> dict[str, object]:
    """The three-line recipe (plus where to write): nothing about the method or training."""
    return {"task": "classification", "model": row.model,
            "data": {"train": str(DATA / row.train), "test": str(DATA / row.test)}, "output": str(out)}


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores visible, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"


def run_row(row: Row, out: Path, extra: list[str]) -> dict[str, object]:
    from tuneforge import api

    started = time.perf_counter()
    api.train(_with_sets(recipe(row, out), extra), overwrite=True)
    wall = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    base = report["baselines"]
    accuracy = report["tuned"]["accuracy"]
    beats = all(s["significant"] and s["delta"][0] > 0 for s in base["systems"].values())
    ok = accuracy >= row.min_accuracy and wall <= row.max_seconds and (beats or not row.beat_baselines)
    return {"row": row.name, "model": row.model, "train": row.train, "test": row.test, "n_test": report["n_test"],
            "accuracy": accuracy, "macro_f1": report["tuned"]["macro_f1"],
            "accuracy_ci": report["intervals"]["accuracy"]["tuned"], "wall_s": wall, "phases": report["phases"],
            "baselines": base["systems"], "verdict": base["verdict"], "choices": report.get("choices", []),
            "head_init": report.get("head_init"), "training": report.get("training"), "sets": extra,
            "passes": ok, "bar": {"min_accuracy": row.min_accuracy, "max_seconds": row.max_seconds,
                                  "beat_baselines": row.beat_baselines},
            "machine": machine(), "command": "flock /tmp/tuneforge-heavy.lock python bench/quality.py --row "
            + row.name + "".join(f" --set {s}" for s in extra),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _with_sets(raw: dict[str, object], sets: list[str]) -> dict[str, object]:
    from tuneforge.recipe import parse_overrides

    merged = json.loads(json.dumps(raw))
    for key, value in parse_overrides(sets).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def table(results: list[dict[str, object]]) -> str:
    head = ("| row | model | test items | accuracy (95% CI) | kNN | TF-IDF | fine-tuned minus best baseline "
            "(paired 95% CI) | wall time (train) | bar | passes |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        b = r["baselines"]
        knn, tfidf = b["knn"], b["tfidf"]
        closest = min(b.values(), key=lambda s: s["delta"][0])
        lo, hi = closest["delta"]
        bar = r["bar"]
        lines.append(
            f"| {r['row']} | {r['model']} | {r['n_test']} | {r['accuracy']:.4f} ([{r['accuracy_ci'][0]:.3f}, "
            f"{r['accuracy_ci'][1]:.3f}]) | {knn['accuracy']:.4f} | {tfidf['accuracy']:.4f} | "
            f"{closest['tuned'] - closest['accuracy']:+.4f} ([{lo:+.3f}, {hi:+.3f}]) | {r['wall_s']:.0f} s "
            f"({r['phases']['training_s']:.0f} s) | >= {bar['min_accuracy']}, <= {bar['max_seconds']:.0f} s"
            + (", beats both" if bar["beat_baselines"] else "") + f" | {'yes' if r['passes'] else 'NO'} |")
    return "\n".join(lines)


def details(results: list[dict[str, object]]) -> str:
    out = []
    for r in results:
        out += [f"### {r['row']}", "", f"- command: `{r['command']}`", f"- machine: {r['machine']}",
                f"- date: {r['date']}", f"- verdict line: {r['verdict']}",
                "- phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items()),
                f"- training: {r['training'].get('steps')} steps, best step {r['training'].get('best_step')}"
                if r.get("training") else "- training: -",
                "- head start: " + (json.dumps(r["head_init"]) if r.get("head_init") else "-"),
                "- choices:", *(f"  - `{c['key']}` = `{c['value']}`: {c['reason']}" for c in r["choices"]), ""]
    return "\n".join(out)


def write_md() -> None:
    results = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(RESULTS.glob("quality-*.json"))
               if not p.name.startswith("quality-exp-")]
    block = "<!-- table -->\n" + table(results) + "\n\n" + details(results) + "<!-- /table -->"
    empty = "# Quality: the three-line recipe\n\n<!-- table --><!-- /table -->\n"
    text = MD.read_text(encoding="utf-8") if MD.is_file() else empty
    start, end = text.index("<!-- table -->"), text.index("<!-- /table -->") + len("<!-- /table -->")
    MD.write_text(text[:start] + block + text[end:], encoding="utf-8")
    print(f"wrote {MD}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", choices=sorted(ROWS), action="append", default=[])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an experiment: override a recipe key (the result is written as quality-ROW-exp-N)")
    parser.add_argument("--tag", default="", help="suffix of the result file (experiments)")
    parser.add_argument("--write", action="store_true", help="rebuild bench/QUALITY_RESULTS.md from the results")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-quality")
    args = parser.parse_args()
    for name in args.row:
        result = run_row(ROWS[name], args.out / (name + args.tag), args.set)
        RESULTS.mkdir(parents=True, exist_ok=True)
        target = RESULTS / (f"quality-{name}.json" if not args.tag else f"quality-exp-{name}{args.tag}.json")
        target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(table([result]))
        print(result["verdict"])
    if args.write:
        write_md()
    if not args.row and not args.write:
        parser.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
