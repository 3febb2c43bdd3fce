"""Render the load-test summaries (bench/results/*.json from load_test.py) as bench/SERVE_RESULTS.md.

    python bench/serve_results.py bench/results/minilm-snips.json bench/results/smollm2-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = """# Serving load test

`bench/load_test.py` against `tuneforge serve` on loopback, run under `flock /tmp/tuneforge-heavy.lock`
on the project's machine (2 shared CPU cores, no GPU, float32). Each client sends one input per request,
cycling through the run's own test split and through three ways of asking: the task endpoint (half the
requests), `/v1/chat/completions`, and a streamed `/v1/completions`. Every answer is compared with offline
`tuneforge.api.predict` on the same input after the server stops. Then malformed, oversized and
unauthorised requests are sent on purpose, and schemathesis fuzzes the server's own `/openapi.json`
(checks `not_a_server_error` and `ignored_auth`, with the API key).

"""


def row(s: dict) -> str:
    lat = s["latency_ms"]
    same = s['parity']['compared'] - s['parity']['mismatches']
    return (f"| {Path(s['run']).name} ({s['model']}, {s['method']}, {s['task']}) "
            f"| {s['clients']} x {s['duration_s']:g} s "
            f"| {s['requests']} | {s['errors']} | {s['throughput_rps']:g} "
            f"| {lat['p50']:g} / {lat['p90']:g} / {lat['p99']:g} "
            f"| {s['mean_batch_size']:g} | {same} of {s['parity']['compared']} "
            f"({s['parity']['unique_inputs']} distinct) |")


def details(s: dict) -> str:
    probes = ", ".join(f"{k} {v['got']}" for k, v in s["probes"].items())
    fz = s["schemathesis"]
    cases = next((line.strip() for line in fz["summary"] if "generated," in line), "")
    lines = [f"### {Path(s['run']).name}", "",
             f"- server flags: `{' '.join(s['serve_flags'])}`; model loaded and healthy in {s['server_startup_s']:g} s",
             f"- requests by kind: {s['by_kind']}; generated tokens: {s['generated_tokens']:g}",
             f"- probes (expected 4xx): {probes}",
             f"- schemathesis: exit code {fz['exit_code']} in {fz['seconds']:g} s; {cases}; server healthy afterwards: "
             f"{s['alive_after_fuzzing']}",
             f"- monitor on the load-phase log: {s['monitor_load_phase']}",
             f"- monitor on the whole log (schemathesis' random strings included): {s['monitor_with_fuzz_traffic']}",
             f"- all checks passed: **{s['passed']}**"]
    if s["parity"]["mismatches"]:
        differ = json.dumps(s['parity']['examples'], ensure_ascii=False)
        lines.append(f"- answers that differ from offline predict: {differ}")
    if s["errors"]:
        lines.append(f"- error examples: {s['error_examples']}")
    return "\n".join(lines) + "\n"


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    table = ["| run | clients x seconds | requests | errors | requests/s | latency p50 / p90 / p99 ms | mean batch "
             "| same as offline |",
             "|---|---|---|---|---|---|---|---|", *map(row, runs)]
    text = HEADER + "\n".join(table) + "\n\n" + "\n".join(map(details, runs))
    out = Path(__file__).parent / "SERVE_RESULTS.md"
    out.write_text(text, encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
