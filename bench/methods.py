"""The fine-tuning methods side by side: one real task, one fixed budget, one table.

    python bench/methods.py --suite intents|slots|all [--only NAME,...] [--set KEY=VALUE ...] [--dry-run]

Two suites:

* ``intents``: SNIPS intent classification with the ``minilm-l6`` encoder (first 700 training rows,
  the 700-row test file, 3 epochs at batch 32, max_length 64); score = accuracy with its 95% CI.
* ``slots``: SNIPS slot extraction (``target_field: slots``) of PlayMusic requests (9 slot types; see
  ``SLOTS_INTENT``) with ``smollm2-135m-instruct`` (first 80 training rows, the first 60 test rows,
  1 epoch at batch 4, max_length 192, 80 new tokens);
  score = field F1 and exact match with their CIs, plus the general-text perplexity change when
  the run's report has a ``forgetting`` key ("-" otherwise).

Every variant is one line of ``*_VARIANTS`` (name -> recipe overrides merged into the suite's base
recipe), so adding a method, or a recipe option such as EWC or DP-SGD, is one line. Each variant
trains in its own ``tuneforge train`` subprocess so that its peak resident memory is its own
(``os.wait4`` returns the rusage of exactly that child, unlike ``RUSAGE_CHILDREN``, which is the
maximum over every child so far). Wall time is the child's whole life (load, base scoring, training,
tuned scoring); "train s" is the training loop alone, from the run's report. Trainable parameters,
scores and intervals come from the run's ``report.json``; the saved size is every ``*.safetensors``
under the run's ``model/`` folder.

The CPU is shared: each variant takes ``/tmp/tuneforge-heavy.lock`` (``fcntl.flock``) for the time
its subprocess runs, so other heavy jobs interleave between variants and timings stay honest
(``--lock suite`` holds it for the whole suite instead). Do not also wrap this script in ``flock``
on the same file: it would wait on itself (pass ``--lock none`` then).

Outputs: the raw rows as JSON (``bench/results/methods-<suite>.json`` by default), the run folders
under ``runs/bench-methods/<suite>/<variant>/``, the table on stdout, and ``bench/METHODS_RESULTS.md``
rebuilt from every ``bench/results/methods-*.json`` but dry runs (a run written elsewhere with
``--out``, e.g. a smoke test, stays out of it).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import fcntl
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNIPS = Path(os.environ.get("TUNEFORGE_SNIPS", ROOT.parent / "shared" / "datasets" / "snips"))
LOCK = Path("/tmp/tuneforge-heavy.lock")
RESULTS = ROOT / "bench" / "results"
MARKDOWN = ROOT / "bench" / "METHODS_RESULTS.md"
RUNS = ROOT / "runs" / "bench-methods"
sys.path.insert(0, str(ROOT / "src"))  # tuneforge's own --set parser; the runs import it in their subprocess

# ----------------------------------------------------------------------------- the suites
INTENTS_BASE: dict[str, Any] = {
    "task": "classification",
    "model": "minilm-l6",
    "data": {"train": str(SNIPS / "intent_train.jsonl"), "test": str(SNIPS / "intent_test.jsonl"),
             "split": {"validation": 0.0}, "max_train_rows": 700},
    "train": {"epochs": 3, "batch_size": 32, "max_length": 64, "seed": 0, "warmup_fraction": 0.1},
    "eval": {"batch_size": 64, "samples": 0},
}

INTENTS_VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"method": {"name": "full"}, "train": {"lr": 1e-4}},
    "lora": {"method": {"name": "lora", "r": 8, "alpha": 16}, "train": {"lr": 2e-3}},
    "dora": {"method": {"name": "lora", "r": 8, "alpha": 16, "use_dora": True}, "train": {"lr": 2e-3}},
    "rslora": {"method": {"name": "lora", "r": 8, "alpha": 16, "use_rslora": True}, "train": {"lr": 2e-3}},
    "ia3": {"method": {"name": "ia3"}, "train": {"lr": 3e-3}},
    "prompt_tuning": {"method": {"name": "prompt_tuning", "num_virtual_tokens": 20}, "train": {"lr": 3e-2}},
    "freeze(head)": {"method": {"name": "freeze"}, "train": {"lr": 1e-3}},
    "freeze(top2)": {"method": {"name": "freeze", "trainable_layers": 2}, "train": {"lr": 3e-4}},
    "layer_freeze(3)": {"method": {"name": "layer_freeze", "frozen_layers": 3}, "train": {"lr": 1e-4}},
    "gradual_unfreeze": {"method": {"name": "gradual_unfreeze", "every_steps": 8}, "train": {"lr": 2e-4}},
    "discriminative": {"method": {"name": "discriminative", "layer_lr_decay": 0.8, "head_lr": 1e-3},
                       "train": {"lr": 1e-4}},
    "full+label_smoothing": {"method": {"name": "full"}, "train": {"lr": 1e-4, "label_smoothing": 0.1}},
    "full+dropout0.2": {"method": {"name": "full"}, "train": {"lr": 1e-4, "dropout": 0.2}},
    "full+dp(eps8)": {"method": {"name": "full"}, "train": {"lr": 1e-3, "privacy": {"target_epsilon": 8.0}}},
    # A 3-block student taught by the 6-block "full" run above (run it first).
    "distill(3 layers)": {"method": {"name": "full"}, "model_layers": 3, "train": {"lr": 2e-4},
                          "distill": {"teacher": "{runs}/intents/full", "temperature": 2.0, "alpha": 0.5}},
}

# One intent's slots, not all 39 SNIPS slot types: the extraction task answers with every declared
# field (null when absent), so the 39-field object is ~276 tokens per answer (smollm2 tokenizer,
# first 100 test rows) -- longer than any small budget can train or generate. PlayMusic has 9 slot
# types: answers of 57 tokens on average, 76 at most. ``prepare_slots`` writes the subset files.
# The budget keeps a variant near 6 minutes on 2 quiet cores: LoRA on smollm2 takes ~0.85 s per
# row there (runs/demo), so 120 rows x 2 epochs is ~3.5 min before scoring. 20 steps was too few:
# every variant then answered all-null objects (field F1 0), the majority layout of 9 mostly-absent
# slots. The demo recipe (runs/demo) learned its layout and values in 46 steps of batch 8. Answers
# leave absent slots out (``prompt.absent_fields: omit``): ~20 tokens instead of 57.
SLOTS_INTENT = "PlayMusic"
SLOTS_BASE: dict[str, Any] = {
    "task": "extraction",
    "model": "smollm2-135m-instruct",
    "data": {"train": "{runs}/data/slots_playmusic_train.jsonl", "test": "{runs}/data/slots_playmusic_test.jsonl",
             "target_field": "slots", "split": {"validation": 0.0}, "max_train_rows": 120, "max_test_rows": 40},
    "train": {"epochs": 2, "batch_size": 4, "max_length": 192, "seed": 0, "warmup_fraction": 0.1},
    "prompt": {"absent_fields": "omit"},
    "eval": {"batch_size": 32, "max_new_tokens": 80, "samples": 0},
    "forgetting": {"measure": True, "max_chunks": 16},
}

SLOTS_VARIANTS: dict[str, dict[str, Any]] = {
    "lora": {"method": {"name": "lora", "r": 16, "alpha": 32}, "train": {"lr": 1e-3}},
    "dora": {"method": {"name": "lora", "r": 16, "alpha": 32, "use_dora": True}, "train": {"lr": 1e-3}},
    "rslora": {"method": {"name": "lora", "r": 16, "alpha": 32, "use_rslora": True}, "train": {"lr": 1e-3}},
    "ia3": {"method": {"name": "ia3"}, "train": {"lr": 3e-3}},
    "prompt_tuning": {"method": {"name": "prompt_tuning", "num_virtual_tokens": 20,
                                 "init_text": "Extract the slots of the request as a JSON object."},
                      "train": {"lr": 3e-2}},
    "prefix_tuning": {"method": {"name": "prefix_tuning", "num_virtual_tokens": 20}, "train": {"lr": 1e-2}},
    "layer_freeze(20/30)": {"method": {"name": "layer_freeze", "frozen_layers": 20}, "train": {"lr": 1e-4}},
    "full": {"method": {"name": "full"}, "train": {"lr": 5e-5}},
    "lora+ewc": {"method": {"name": "lora", "r": 16, "alpha": 32}, "train": {"lr": 1e-3},
                 "forgetting": {"ewc": {"weight": 1e5}}},
    "lora+rehearsal": {"method": {"name": "lora", "r": 16, "alpha": 32}, "train": {"lr": 1e-3},
                       "forgetting": {"rehearsal": {"fraction": 0.2}}},
}

# score columns: (label, report metric, show its 95% CI)
SUITES: dict[str, dict[str, Any]] = {
    "intents": {"base": INTENTS_BASE, "variants": INTENTS_VARIANTS,
                "scores": [("accuracy", "accuracy", True), ("macro-F1", "macro_f1", False)],
                "task_line": "SNIPS intents (7 classes), minilm-l6, first 700 train rows, 700 test rows, "
                             "3 epochs x batch 32, max_length 64, no validation split (last step is scored)"},
    "slots": {"base": SLOTS_BASE, "variants": SLOTS_VARIANTS,
              "scores": [("field F1", "field_f1", True), ("exact match", "exact_match", True),
                         ("JSON valid", "json_valid", False)],
              "prepare": lambda: prepare_slots(),
              "task_line": f"SNIPS slot extraction (JSON), {SLOTS_INTENT} requests only (9 slot types), "
                           "smollm2-135m-instruct, first 120 train rows, first 40 test rows, "
                           "2 epochs x batch 4 (60 steps), max_length 192, answers leave absent slots out, "
                           "greedy 80 new tokens, no validation split; the general-text perplexity "
                           "is tuneforge's built-in forgetting check (16 chunks)"},
}


def prepare_slots() -> None:
    """Write the rows of ``SLOTS_INTENT`` (file order, so the subset is the same every time)."""
    out = RUNS / "data"
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        lines = (SNIPS / f"slots_{split}.jsonl").read_text(encoding="utf-8").splitlines()
        keep = [line for line in lines if line.strip() and json.loads(line).get("intent") == SLOTS_INTENT]
        target = out / f"slots_{SLOTS_INTENT.lower()}_{split}.jsonl"
        tmp = target.with_suffix(".tmp")
        tmp.write_text("\n".join(keep) + "\n", encoding="utf-8")
        tmp.replace(target)


# ----------------------------------------------------------------------------- recipes
def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: nested dicts merge, anything else replaces (``method`` replaces whole, see below)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "method":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def variant_recipe(suite: str, name: str, overrides: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """The suite's base recipe, then the variant's overrides, then the command line's ``--set``.

    ``method`` is replaced rather than merged: a method's keys belong to that method alone.
    """
    return _with_runs(merge(merge(SUITES[suite]["base"], overrides), shared))


def _with_runs(node: Any) -> Any:
    """Fill ``{runs}`` (this bench's run folder: derived data, teachers trained by earlier variants)."""
    if isinstance(node, dict):
        return {k: _with_runs(v) for k, v in node.items()}
    if isinstance(node, str) and "{runs}" in node:
        return node.replace("{runs}", str(RUNS))
    return node


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["train.max_steps=2"]`` -> ``{"train": {"max_steps": 2}}``, with the CLI's own ``--set`` parser."""
    from tuneforge.errors import ConfigError
    from tuneforge.recipe import parse_overrides

    try:
        return parse_overrides(items)
    except ConfigError as err:
        raise SystemExit(f"--set: {err}") from None


# ----------------------------------------------------------------------------- running one variant
class HeavyLock:
    """Hold the shared heavy-job lock while one variant's subprocess runs; report the wait."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.waited = enabled, 0.0

    def __enter__(self) -> HeavyLock:
        if self.enabled:
            self.fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)
            started = time.perf_counter()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.waited = time.perf_counter() - started
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def run_variant(suite: str, name: str, recipe: dict[str, Any], *, dry_run: bool, lock: bool,
                timeout: float) -> dict[str, Any]:
    """Train one variant in a child process; measure its wall time and peak RSS; read its report."""
    folder = RUNS / suite
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.+-]+", "_", name).strip("_")  # "freeze(top2)" -> "freeze_top2"
    recipe_path, log_path = folder / f"{stem}.yaml", folder / f"{stem}.log"
    recipe["output"] = str(folder / stem)
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "tuneforge.cli", "train", str(recipe_path), "--dry-run" if dry_run else "--overwrite"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    row: dict[str, Any] = {"variant": name, "recipe": os.path.relpath(recipe_path, ROOT),
                           "log": os.path.relpath(log_path, ROOT), "method": recipe["method"]["name"],
                           "lr": recipe.get("train", {}).get("lr")}
    print(f"[{suite}] {name}: waiting for the lock" if lock else f"[{suite}] {name}", flush=True)
    with HeavyLock(lock) as held, log_path.open("w", encoding="utf-8") as log:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        rc, peak_kb = _wait(child, timeout)
        row["wall_s"] = time.perf_counter() - started
        row["lock_wait_s"] = held.waited
    row["rc"], row["peak_rss_mb"] = rc, peak_kb / 1024.0
    tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    if rc != 0:
        row["status"] = "timeout" if rc == -9 else "failed"
        row["error"] = _error_line(tail)
    else:
        row["status"] = "dry-run" if dry_run else "ok"
        if dry_run:
            row["preflight"] = _preflight(tail)
        else:
            row.update(read_run(Path(recipe["output"])))
    print(f"[{suite}] {name}: {row['status']} in {row['wall_s']:.0f} s, peak RSS {row['peak_rss_mb']:.0f} MB"
          + (f" -- {row['error']}" if "error" in row else ""), flush=True)
    return row


def _wait(child: subprocess.Popen[bytes], timeout: float) -> tuple[int, int]:
    """Exit code and peak RSS (KiB) of exactly this child, via ``os.wait4``; kill it past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, usage.ru_maxrss
        if time.monotonic() > deadline:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = -9
            return -9, usage.ru_maxrss
        time.sleep(0.2)


def _error_line(lines: list[str]) -> str:
    """The last line that names the error (``tuneforge: error`` or a traceback's final line)."""
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("tuneforge: error") or (text and ("Error" in text.split(":")[0] or "Exception" in text)):
            return text[:400]
    return (lines[-1] if lines else "no output")[:400]


def _preflight(lines: list[str]) -> list[str]:
    keep = ("parameters", "optimizer steps", "peak memory", "throughput", "train tokens", "WARNING")
    return [line.strip() for line in lines if line.strip().startswith(keep)]


def read_run(folder: Path) -> dict[str, Any]:
    """The figures the table needs, from the run's report.json (absent keys stay absent)."""
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {"parameters": report.get("parameters"), "n_test": report.get("n_test"),
                           "tuned": _numbers(report.get("tuned", {})), "base": _numbers(report.get("base") or {}),
                           "intervals": report.get("intervals", {}), "training": report.get("training"),
                           "forgetting": report.get("forgetting"), "privacy": report.get("privacy")}
    size = report.get("adapter_bytes")
    if size is None:
        size = sum(f.stat().st_size for f in (folder / "model").rglob("*.safetensors"))
    out["saved_mb"] = size / 1e6
    return out


def _numbers(scores: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if isinstance(v, (int, float))}


# ----------------------------------------------------------------------------- the table
def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    versions = subprocess.run([sys.executable, "-c", "import torch, transformers, peft; "
                               "print(torch.__version__, transformers.__version__, peft.__version__)"],
                              capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    torch_v, tf_v, peft_v = (versions.stdout.split() + ["?", "?", "?"])[:3]
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "torch": torch_v, "transformers": tf_v, "peft": peft_v, "platform": platform.platform()}


def _ci(row: dict[str, Any], metric: str) -> str:
    value = row.get("tuned", {}).get(metric)
    if value is None:
        return "-"
    ci = row.get("intervals", {}).get(metric, {}).get("tuned")
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _forgetting(row: dict[str, Any]) -> str:
    f = row.get("forgetting")
    if not f:
        return "-"
    b, a = f["before"]["general_perplexity"], f["after"]["general_perplexity"]
    return f"{b:.2f} -> {a:.2f} ({f['perplexity_change']:+.1%})"


def _probe(row: dict[str, Any]) -> str:
    f = row.get("forgetting")
    if not f or f.get("probe_accuracy_change") is None:
        return "-"
    return f"{f['before']['probe_accuracy']:.3f} -> {f['after']['probe_accuracy']:.3f}"


def render_suite(result: dict[str, Any]) -> list[str]:
    suite = SUITES[result["suite"]]
    rows = result["rows"]
    score_cols = suite["scores"]
    decoder = result["suite"] == "slots"
    head = ["variant", "method", "lr", "trainable params", "saved MB", "peak RSS MB", "wall s", "train s"]
    head += [label + (" [95% CI]" if ci else "") for label, _, ci in score_cols]
    if decoder:
        head += ["general-text perplexity", "probe accuracy"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row["status"] != "ok":
            cells = [row["variant"], row["method"], _lr(row), "-", "-", f"{row['peak_rss_mb']:.0f}",
                     f"{row['wall_s']:.0f}", "-"]
            cells += [f"{row['status'].upper()}: {row.get('error', '')}".replace("|", "\\|")]
            cells += [""] * (len(head) - len(cells))
        else:
            p, t = row.get("parameters") or {}, row.get("training") or {}
            share = 100.0 * p.get("trainable", 0) / max(p.get("total", 1), 1)
            cells = [row["variant"], row["method"], _lr(row), f"{p.get('trainable', 0):,} ({share:.2f}%)",
                     f"{row['saved_mb']:.2f}", f"{row['peak_rss_mb']:.0f}", f"{row['wall_s']:.0f}",
                     f"{t.get('seconds', 0):.0f}"]
            cells += [_ci(row, m) if ci else _plain(row, m) for _, m, ci in score_cols]
            if decoder:
                cells += [_forgetting(row), _probe(row)]
        md.append("| " + " | ".join(cells) + " |")
    base = next((r["base"] for r in rows if r.get("base")), None)
    if base:
        md += ["", "Untouched base model on the same test rows: "
               + ", ".join(f"{label} {base[m]:.3f}" for label, m, _ in score_cols if m in base) + "."]
    return md


def _lr(row: dict[str, Any]) -> str:
    return "-" if row.get("lr") is None else f"{row['lr']:g}"


def _plain(row: dict[str, Any], metric: str) -> str:
    value = row.get("tuned", {}).get(metric)
    return "-" if value is None else f"{value:.3f}"


def write_markdown() -> None:
    """Rebuild METHODS_RESULTS.md from every results JSON on disk (one section per suite file)."""
    md = ["# Fine-tuning methods on a fixed budget", "",
          "Written by `bench/methods.py` from the JSON files in `bench/results/`; each section says the command, "
          "the machine and the date it was measured. Peak RSS is the training subprocess's maximum resident "
          "memory (`os.wait4`); wall s is the whole subprocess (model load, base and tuned scoring, training); "
          "train s is the training loop alone. Intervals are 95% bootstrap intervals from the run's report. "
          "The task lines give the suite's defaults; the `--set` line of a section says what its run changed. "
          "With `--lock variant` or `suite` no other locked (heavy) job shared the CPU; with `--lock none` "
          "(the command says which) other jobs may have, so wall and train seconds are then upper bounds, "
          "not speed figures. Trainable parameters are counted at "
          "the end of training (gradual unfreezing: after its last unfreeze). For prompt and prefix tuning the "
          "'before' general-text perplexity is measured with the untrained virtual tokens attached.", ""]
    for path in sorted(RESULTS.glob("methods-*.json")):
        if path.stem.endswith("dry-run"):
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        m = result["machine"]
        md += [f"## {result['suite']} (`{path.relative_to(ROOT)}`)", "",
               SUITES[result["suite"]]["task_line"] + ".", "",
               f"- command: `{result['command']}`", f"- date: {result['date']}",
               f"- machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, transformers {m['transformers']}, "
               f"peft {m['peft']}, Python {m['python']}", ""]
        if result.get("overrides"):
            md += [f"- `--set` on every variant (overrides the task line): `{json.dumps(result['overrides'])}`", ""]
        md += render_suite(result) + [""]
    tmp = MARKDOWN.with_suffix(".md.tmp")
    tmp.write_text("\n".join(md), encoding="utf-8")
    tmp.replace(MARKDOWN)


def add_to(path: Path, result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Continue an earlier result file: its rows stay, except those of the variants run again.

    Refused when the earlier run had other ``--set`` overrides: its rows would not be comparable.
    """
    if not path.is_file():
        return result
    earlier = json.loads(path.read_text(encoding="utf-8"))
    if earlier["overrides"] != result["overrides"] or earlier["dry_run"] != result["dry_run"]:
        raise SystemExit(f"--add: {path} was measured with --set {earlier['overrides']}, not {result['overrides']}")
    rows = [r for r in earlier["rows"] if r["variant"] not in names]
    return {**result, "command": earlier["command"] + " && " + result["command"], "rows": rows}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    global RUNS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--only", default=None, help="comma-separated variant names (default: every variant)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override on every variant, e.g. --set train.max_steps=2 (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/methods-<suite>.json")
    parser.add_argument("--add", action="store_true", help="keep the other variants' rows of the result file")
    parser.add_argument("--dry-run", action="store_true", help="preflight each variant (time and memory estimate)")
    parser.add_argument("--lock", choices=["variant", "suite", "none"], default="variant",
                        help="hold /tmp/tuneforge-heavy.lock per variant (others interleave), for the whole "
                             "suite (no queueing between variants), or not at all")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a variant is killed")
    parser.add_argument("--runs", type=Path, default=RUNS, help="parent of the run folders (default: %(default)s)")
    parser.add_argument("--render", action="store_true", help="only rebuild bench/METHODS_RESULTS.md from the JSON")
    parser.add_argument("--list", action="store_true", help="print the variants and their overrides, then stop")
    args = parser.parse_args(argv)
    RUNS = args.runs.resolve()
    if args.render:
        write_markdown()
        print(f"wrote {MARKDOWN}")
        return 0
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    if args.out is not None and len(suites) > 1:
        parser.error("--out needs a single --suite")
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    shared = parse_sets(args.set)
    for suite in suites:
        variants = SUITES[suite]["variants"]
        if args.list:
            for name, over in variants.items():
                print(f"{suite:8s} {name:22s} {json.dumps(over)}")
            continue
        names = [n for n in variants if only is None or n in only]
        unknown = sorted(set(only or []) - set(variants))
        if unknown and len(suites) == 1:
            parser.error(f"unknown variant(s) for {suite}: {', '.join(unknown)}; known: {', '.join(variants)}")
        result = {"suite": suite, "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
                  "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                  "overrides": shared, "dry_run": args.dry_run, "lock": args.lock, "rows": []}
        if "prepare" in SUITES[suite]:
            SUITES[suite]["prepare"]()
        out = args.out or RESULTS / f"methods-{suite}{'-dry-run' if args.dry_run else ''}.json"
        if args.add:
            result = add_to(out, result, names)
        with HeavyLock(args.lock == "suite"):
            for name in names:
                recipe = variant_recipe(suite, name, variants[name], shared)
                result["rows"].append(run_variant(suite, name, recipe, dry_run=args.dry_run,
                                                  lock=args.lock == "variant", timeout=args.timeout))
                write_json(out, result)  # after every variant: a crash keeps what was measured
        if args.dry_run:
            for row in result["rows"]:
                print(f"{row['variant']}:\n  " + "\n  ".join(row.get("preflight", [row.get("error", "")])))
        else:
            print("\n".join(render_suite(result)))
            write_markdown()
        print(f"wrote {out}" + ("" if args.dry_run else f" and {MARKDOWN}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
