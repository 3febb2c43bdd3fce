"""Preference tuning on real data, on a CPU budget: a reward model, DPO, and GRPO for valid JSON.

    python bench/preference.py --out /work/runs/pref-bench            # all three, one at a time
    python bench/preference.py --only rm,dpo --set dpo:train.max_steps=20

1. ``rm``: examples/hh-reward-model.yaml (SmolLM2 + LoRA, Bradley-Terry) on the first half of
   ``../shared/datasets/hh_harmless/pairs_train.jsonl``;
2. ``dpo``: examples/hh-dpo.yaml on the second half (disjoint from the reward model's), judged for the win
   rate by the ``rm`` run, which never saw its pairs;
3. ``rl``: examples/products-grpo.yaml, GRPO with the ``json_valid`` reward on product listings.

Each run is a ``tuneforge train`` child process holding ``/tmp/tuneforge-heavy.lock`` (so heavy jobs on the
shared CPU run one at a time); its wall time and peak RSS (``os.wait4``) are recorded with the report's
figures in ``bench/results/preference-<name>.json``, and ``bench/PREFERENCE_RESULTS.md`` is rewritten from
every results file present. Run folders go under ``--out`` (outside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import HeavyLock, _error_line, _wait, machine  # noqa: E402  (same lock, same measurements)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
HH = ROOT.parent / "shared" / "datasets" / "hh_harmless"
RECIPES = {"rm": "examples/hh-reward-model.yaml", "dpo": "examples/hh-dpo.yaml", "rl": "examples/products-grpo.yaml"}


def split_hh(out: Path) -> dict[str, Path]:
    """Two disjoint halves of the HH training pairs: one trains the reward model (the judge), one DPO."""
    lines = (HH / "pairs_train.jsonl").read_text(encoding="utf-8").splitlines()
    half = len(lines) // 2
    # tuneforge refuses a file with bad rows (listing them); the shared data has a few pairs with an empty
    # answer, which this benchmark drops (and counts) rather than edit the shared file
    keep = [all(str(json.loads(line).get(k, "")).strip() for k in ("prompt", "chosen", "rejected")) for line in lines]
    dropped = [i + 1 for i, ok in enumerate(keep) if not ok]
    if dropped:
        print(f"dropped {len(dropped)} training pair(s) with an empty prompt or answer: lines {dropped}", flush=True)
    first = [line for line, ok in zip(lines[:half], keep[:half]) if ok]
    second = [line for line, ok in zip(lines[half:], keep[half:]) if ok]
    paths = {"rm": out / "data" / "hh_train_first_half.jsonl", "dpo": out / "data" / "hh_train_second_half.jsonl"}
    paths["rm"].parent.mkdir(parents=True, exist_ok=True)
    paths["rm"].write_text("\n".join(first) + "\n", encoding="utf-8")
    paths["dpo"].write_text("\n".join(second) + "\n", encoding="utf-8")
    return paths


def overrides(name: str, out: Path, data: dict[str, Path], extra: list[str]) -> list[str]:
    sets = [f"output={out / name}"]
    if name in data:
        sets.append(f"data.train={data[name]}")
    if name == "dpo" and (out / "rm" / "report.json").is_file():
        sets.append(f"eval.judge={out / 'rm'}")
    return sets + [s.split(":", 1)[1] for s in extra if s.startswith(f"{name}:")]


def run(name: str, sets: list[str], timeout: float, lock: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tuneforge.cli", "train", RECIPES[name], "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1"}
    log_path = Path(sets[0].split("=", 1)[1] + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] waiting for the lock: {' '.join(cmd)}", flush=True)
    with HeavyLock(lock) as held, log_path.open("w", encoding="utf-8") as log:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        rc, peak_kb = _wait(child, timeout)
        wall = time.perf_counter() - started
    row: dict[str, Any] = {"name": name, "command": " ".join(cmd[1:]), "rc": rc, "wall_s": wall,
                           "lock_wait_s": held.waited, "peak_rss_mb": peak_kb / 1024,
                           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}
    if rc != 0:
        row["error"] = _error_line(log_path.read_text(encoding="utf-8", errors="replace").splitlines())
    else:
        report_dir = Path(sets[0].split("=", 1)[1])
        final = report_dir / "stages" if (report_dir / "stages").is_dir() else None
        if final is not None:  # a staged run: the last stage's report, plus the stage summary
            report_dir = sorted(p for p in final.iterdir() if p.is_dir())[-1]
        row["report"] = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
        row["metrics_tail"] = [json.loads(line)
                               for line in (report_dir / "metrics.jsonl").read_text().splitlines()][-3:]
    print(f"[{name}] rc={rc} in {wall:.0f} s, peak RSS {peak_kb / 1024:.0f} MB", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"preference-{name}.json").write_text(json.dumps(row, indent=2, default=str) + "\n", encoding="utf-8")
    return row


# ----------------------------------------------------------------------------- the results file
def _ci(report: dict[str, Any], metric: str) -> str:
    value = report["tuned"].get(metric)
    if value is None:
        return "-"
    ci = report.get("intervals", {}).get(metric, {}).get("tuned")
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _section(row: dict[str, Any]) -> list[str]:
    m = row["machine"]
    md = [f"## {row['name']}", "", f"- command: `python {row['command']}`", f"- date: {row['date']}",
          f"- machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, transformers {m['transformers']}, "
          f"peft {m['peft']}", f"- wall {row['wall_s']:.0f} s (whole child process: load, train, evaluate), "
          f"peak RSS {row['peak_rss_mb']:.0f} MB, waited {row['lock_wait_s']:.0f} s for the lock"]
    if row["rc"] != 0:
        return md + [f"- FAILED (rc {row['rc']}): {row.get('error')}", ""]
    rep = row["report"]
    t = rep.get("training", {})
    md.append(f"- training: {t.get('steps')} steps in {t.get('seconds', 0):.0f} s; {rep['n_test']} held-out rows")
    md += ["", "| metric | base | tuned [95% CI] |", "|---|---|---|"]
    for metric in rep["headline"]:
        base = rep.get("base", {}).get(metric)
        md.append(f"| {metric} | {'-' if base is None else f'{base:.3f}'} | {_ci(rep, metric)} |")
    extra = {k: v for k, v in rep["tuned"].items() if k in ("judge_reward_tuned", "judge_reward_reference", "pairs")}
    if extra:
        md.append("")
        md.append("Also: " + ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
                                       for k, v in extra.items()))
    return md + [""]


def write_results() -> Path:
    rows = [json.loads((RESULTS / f"preference-{n}.json").read_text()) for n in RECIPES
            if (RESULTS / f"preference-{n}.json").is_file()]
    md = ["# Preference tuning on a CPU budget", "",
          "Written by `bench/preference.py` from `bench/results/preference-*.json`. Intervals are 95% percentile "
          "bootstrap intervals over the held-out rows (the report's). Chance pair accuracy is 0.5.", ""]
    for row in rows:
        md += _section(row)
    out = ROOT / "bench" / "PREFERENCE_RESULTS.md"
    notes = ROOT / "bench" / "PREFERENCE_NOTES.md"
    if notes.is_file():
        md += ["", notes.read_text(encoding="utf-8")]
    out.write_text("\n".join(md) + "\n", encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT.parent / "runs" / "pref-bench")
    parser.add_argument("--only", default="rm,dpo,rl", help="comma-separated: rm, dpo, rl")
    parser.add_argument("--set", action="append", default=[], help="NAME:KEY=VALUE, e.g. dpo:train.max_steps=20")
    parser.add_argument("--timeout", type=float, default=1500)
    parser.add_argument("--lock", choices=["run", "suite", "held"], default="suite",
                        help="hold the heavy-job lock per run, once for the whole suite (runs back to back), or "
                             "not at all because the caller already holds it")
    parser.add_argument("--table-only", action="store_true", help="rewrite the results file only")
    args = parser.parse_args()
    if not args.table_only:
        data = split_hh(args.out)
        with HeavyLock(args.lock == "suite") as held:
            if args.lock == "suite":
                print(f"suite lock taken after {held.waited:.0f} s", flush=True)
            for name in args.only.split(","):
                run(name, overrides(name, args.out, data, args.set), args.timeout, lock=args.lock == "run")
    print(write_results())


if __name__ == "__main__":
    main()
