"""Measure compression of tuned runs: size, latency and quality against the uncompressed model.

Run it under the shared lock so that timings are not disturbed by other heavy jobs::

    flock /tmp/tuneforge-heavy.lock python bench/compress.py /work/runs/minilm-snips --method int8-dynamic

Each (run, method) writes ``bench/results/compress-<run>-<method>.json``; the table in
``bench/COMPRESS_RESULTS.md`` is rebuilt from every result file, so runs can be measured one at a time.
The compressed folders go to ``--out`` (default a temporary folder), never into the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from tuneforge.compress import CompressConfig, compress

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def measure(run_dir: Path, cfg: CompressConfig, out_root: Path) -> dict:
    started = time.perf_counter()
    method = cfg.method
    result = compress(run_dir, cfg, out_root / f"{run_dir.name}-{method}", overwrite=True)
    r = result.report
    facts = r["compression"]
    return {"run": run_dir.name, "method": method, "task": r["task"], "model": r["model"],
            "tuning": r["method"], "n_test": r["n_test"], "batch_size": facts["batch_size"],
            "options": {k: v for k, v in cfg.model_dump().items() if k != "method"}, "summary": facts["summary"],
            "size_bytes": facts["size_bytes"], "ms_per_item": facts["ms_per_item"],
            "headline": r["headline"], "uncompressed": {m: r["base"].get(m) for m in r["headline"]},
            "compressed": {m: r["tuned"].get(m) for m in r["headline"]},
            "delta": r["delta"], "delta_ci": {m: r["intervals"].get(m, {}).get("delta") for m in r["headline"]},
            "wall_s": round(time.perf_counter() - started, 1),
            "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "platform": platform.platform()}}


def render(results: list[dict]) -> str:
    lines = ["# Compression results", "",
             "Produced by `bench/compress.py` (one JSON per row in `bench/results/`). Quality is measured on the "
             "run's own saved test split; the change's 95% interval is a paired bootstrap over the test items. "
             "Latency is wall-clock `task.predict` time per test item at the run's eval batch size, after one "
             "warm-up batch, uncompressed then compressed in the same process. Size is the weights file, both "
             "written as safetensors by the same writer.", "",
             "| run | method | test items | size MB (uncompr. → compr.) | size ratio | ms/item (uncompr. → compr.) "
             "| latency ratio | metric | uncompressed | compressed | change [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, ms = r["size_bytes"], r["ms_per_item"]
        for i, m in enumerate(r["headline"]):
            ci = r["delta_ci"].get(m)
            change = "-" if r["delta"].get(m) is None else f"{r['delta'][m]:+.4f}" + (
                f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
            opts = f" (sparsity {r['options']['sparsity']}, {r['options']['recovery_steps']} recovery steps)" \
                if r["method"].startswith("prune") else ""
            head = [f"{r['run']} ({r['model']}, {r['tuning']}, {r['task']})", r["method"] + opts, str(r["n_test"]),
                    f"{s['uncompressed'] / 1e6:.1f} → {s['compressed'] / 1e6:.1f}", f"{s['ratio']:.3f}",
                    f"{ms['uncompressed']:.1f} → {ms['compressed']:.1f}", f"{ms['ratio']:.3f}"] if i == 0 \
                else ["", "", "", "", "", "", ""]
            lines.append("| " + " | ".join(head + [m, f"{r['uncompressed'][m]:.4f}", f"{r['compressed'][m]:.4f}",
                                                    change]) + " |")
    machines = {json.dumps(r["machine"], sort_keys=True) for r in results}
    lines += ["", "Machines: " + "; ".join(machines), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--method", nargs="+", default=["int8-dynamic"])
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--recovery-steps", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="where compressed folders go (default: a temp dir)")
    args = parser.parse_args()
    out_root = args.out or Path(tempfile.mkdtemp(prefix="tuneforge-bench-compress-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        for method in args.method:
            cfg = CompressConfig(method=method, sparsity=args.sparsity, recovery_steps=args.recovery_steps)
            row = measure(run, cfg, out_root)
            (RESULTS / f"compress-{run.name}-{method}.json").write_text(json.dumps(row, indent=2) + "\n")
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("compress-*.json"))]
    (HERE / "COMPRESS_RESULTS.md").write_text(render(rows))
    print(render(rows))


if __name__ == "__main__":
    main()
