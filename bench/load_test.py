"""Load test of `tuneforge serve` on loopback: concurrency, latency, throughput, parity, robustness.

    flock /tmp/tuneforge-heavy.lock python bench/load_test.py RUN_DIR --clients 16 --duration 60

1. starts `tuneforge serve RUN_DIR` in a subprocess on a free loopback port, with an API key and
   request logging;
2. runs N concurrent clients (httpx + asyncio) for D seconds; each client cycles through the
   run's own test inputs and through the endpoints (the task's endpoint, chat completions,
   streamed completions), and every answer is kept;
3. probes malformed, oversized and unauthorised requests (each must get its 4xx);
4. runs schemathesis against the server's own /openapi.json (checks: no 5xx, auth enforced);
5. stops the server and checks that every answer equals offline `tuneforge.api.predict` for the
   same input;
6. runs `tuneforge monitor` on the request log of the load phase (test-split inputs: no drift
   expected) and on the whole log, whose schemathesis inputs are random strings (drift expected).

Prints a summary and writes it as JSON (``--out``). Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tuneforge import api
from tuneforge.run.splits import load_saved_split
from tuneforge.evaluate.metrics import parse_json_object
from tuneforge.deploy.monitor import monitor

KEY_ENV = "TUNEFORGE_LOADTEST_KEY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, key: str, log: Path, extra: list[str], out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, KEY_ENV: key}
    cmd = [sys.executable, "-m", "tuneforge.cli", "serve", str(run), "--port", str(port), "--api-key-env", KEY_ENV,
           "--log-requests", str(log), *extra]
    return subprocess.Popen(cmd, env=env, stdout=out.open("wb"), stderr=subprocess.STDOUT)


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was healthy")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become healthy in time")


# ----------------------------------------------------------------------------- load
def endpoint_for(task: str) -> str:
    return {"classification": "/v1/classify", "extraction": "/v1/extract"}[task]


async def one_request(client: httpx.AsyncClient, kind: str, task: str, text: str) -> tuple[int, Any]:
    """Send ``text`` the way ``kind`` says and return the status and the comparable answer."""
    if kind == "task":
        r = await client.post(endpoint_for(task), json={"texts": [text]})
        if r.status_code != 200:
            return r.status_code, r.text
        res = r.json()["results"][0]
        return 200, res["label"] if task == "classification" else res["fields"]
    if kind == "chat":
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}]})
        if r.status_code != 200:
            return r.status_code, r.text
        content = r.json()["choices"][0]["message"]["content"]
    else:  # streamed completion: the answer is the concatenated server-sent events
        content = ""
        async with client.stream("POST", "/v1/completions", json={"prompt": text, "stream": True}) as r:
            if r.status_code != 200:
                return r.status_code, (await r.aread()).decode()
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    content += json.loads(line[6:])["choices"][0]["text"]
    return 200, content if task == "classification" else parse_json_object(content)


async def load(base: str, key: str, task: str, texts: list[str], clients: int, duration: float) -> list[dict[str, Any]]:
    kinds = ["task", "task", "chat", "stream"]
    results: list[dict[str, Any]] = []
    deadline = time.perf_counter() + duration
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(c: int, client: httpx.AsyncClient) -> None:
        k = 0
        while time.perf_counter() < deadline:
            i = (c + k * clients) % len(texts)
            kind = kinds[(c + k) % len(kinds)]
            start = time.perf_counter()
            try:
                status, answer = await one_request(client, kind, task, texts[i])
            except httpx.HTTPError as err:
                status, answer = -1, f"{type(err).__name__}: {err}"
            results.append({"client": c, "kind": kind, "text": texts[i], "status": status, "answer": answer,
                            "latency": time.perf_counter() - start, "end": time.perf_counter()})
            k += 1

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300, limits=limits) as client:
        await asyncio.gather(*(client_loop(c, client) for c in range(clients)))
    return results


# ----------------------------------------------------------------------------- robustness
def probes(base: str, key: str, task: str) -> dict[str, dict[str, Any]]:
    """Requests a hostile or careless client sends; each must get the 4xx named here."""
    path = endpoint_for(task)
    good = {"Authorization": f"Bearer {key}"}
    json_h = {**good, "content-type": "application/json"}
    cases = {
        "no API key": (401, lambda c: c.post(path, json={"texts": ["hello"]})),
        "wrong API key": (401,
                          lambda c: c.post(path, json={"texts": ["hello"]}, headers={"Authorization": "Bearer x"})),
        "malformed JSON": (422, lambda c: c.post(path, content=b'{"texts": [', headers=json_h)),
        "oversized body (2 MB)": (413, lambda c: c.post(path, content=json.dumps({"texts": ["a" * 2_000_000]}).encode(),
                                                        headers=json_h)),
        "too many texts": (422, lambda c: c.post(path, json={"texts": ["a"] * 10_000}, headers=good)),
        "text too long": (422, lambda c: c.post(path, json={"texts": ["a" * 100_000]}, headers=good)),
        "wrong type": (422, lambda c: c.post(path, json={"texts": [1, None]}, headers=good)),
        "unknown field": (422, lambda c: c.post(path, json={"texts": ["a"], "x": 1}, headers=good)),
        "bad chat role": (422, lambda c: c.post("/v1/chat/completions",
                                                json={"messages": [{"role": "x", "content": "a"}]}, headers=good)),
        "not JSON at all": (422, lambda c: c.post(path, content=b"\x00\xff garbage", headers=json_h)),
    }
    out = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, (want, send) in cases.items():
            got = send(client).status_code
            out[name] = {"expected": want, "got": got, "ok": got == want}
    return out


def fuzz(base: str, key: str, max_examples: int, max_time: int, report: Path) -> dict[str, Any]:
    # the venv's console script, found beside this interpreter when the venv is not on PATH
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    cmd = [exe, "run", f"{base}/openapi.json", "--checks", "not_a_server_error,ignored_auth",
           "-H", f"Authorization: Bearer {key}", "-n", str(max_examples), "--max-time", str(max_time),
           "--seed", "0", "--workers", "1", "--request-timeout", "300", "--no-color",
           "--report", "junit", "--report-junit-path", str(report)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=report.parent)
    tail = proc.stdout.strip().splitlines()[-25:]
    return {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "summary": [line for line in tail if line.strip()], "command": " ".join(cmd).replace(key, "$KEY")}


# ----------------------------------------------------------------------------- parity
def offline_answers(run: Path, texts: list[str], tmp: Path) -> dict[str, Any]:
    unique = sorted(set(texts))
    path = tmp / "offline_inputs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in unique), encoding="utf-8")
    out = api.predict(run, path, tmp / "offline_predictions.jsonl")
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    return {r["text"]: r["prediction"] for r in rows}


def scrape(base: str, key: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text  # behind the key
    values = {}
    for line in text.splitlines():
        for name in ("tuneforge_batch_size_sum", "tuneforge_batch_size_count", "tuneforge_generated_tokens_total"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    return values


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=10)
    p.add_argument("--serve-arg", action="append", default=[], help="extra `tuneforge serve` flag (repeatable)")
    p.add_argument("--fuzz-examples", type=int, default=25, help="schemathesis -n (cases per operation)")
    p.add_argument("--fuzz-max-time", type=int, default=300)
    p.add_argument("--out", type=Path, default=None, help="summary JSON (default bench/results/<run>.json)")
    args = p.parse_args()

    run = args.run_dir.resolve()
    import yaml

    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    task, text_field = recipe["task"], recipe["data"]["text_field"]
    texts = [r.fields[text_field] for r in load_saved_split(run / "data", "test")]
    out = args.out or Path(__file__).parent / "results" / f"{run.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tf-loadtest-"))
    key, port = secrets.token_hex(16), free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "requests.jsonl"
    extra = ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms), *args.serve_arg]
    proc = start_server(run, port, key, log, extra, tmp / "server.log")
    try:
        startup = wait_healthy(base, proc)
        print(f"server up in {startup:.1f} s on {base}; {args.clients} clients for {args.duration:g} s", flush=True)
        t0 = time.perf_counter()
        results = asyncio.run(load(base, key, task, texts, args.clients, args.duration))
        elapsed = time.perf_counter() - t0
        metrics = scrape(base, key)
        time.sleep(0.5)  # the last log lines are written after their responses
        shutil.copy(log, tmp / "requests_load_phase.jsonl")  # the fuzzing below logs garbage on purpose
        print(f"{len(results)} requests in {elapsed:.1f} s; probing and fuzzing", flush=True)
        probe = probes(base, key, task)
        fuzzed = fuzz(base, key, args.fuzz_examples, args.fuzz_max_time, tmp / "schemathesis.xml")
        alive = httpx.get(f"{base}/health", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(60)
    print("server stopped; predicting offline for the parity check", flush=True)
    offline = offline_answers(run, [r["text"] for r in results], tmp)
    ok = [r for r in results if r["status"] == 200]
    mismatches = [r for r in ok if r["answer"] != offline[r["text"]]]
    lat = np.array([r["latency"] for r in ok]) if ok else np.zeros(1)
    by_kind = {k: sum(r["kind"] == k for r in results) for k in ("task", "chat", "stream")}
    mon = monitor(run, tmp / "requests_load_phase.jsonl", out_dir=tmp / "monitor_load")
    mon_fuzz = monitor(run, log, out_dir=tmp / "monitor_with_fuzz")
    summary = {
        "run": str(run), "task": task, "model": recipe["model"], "method": recipe["method"]["name"],
        "clients": args.clients, "duration_s": round(elapsed, 1), "server_startup_s": round(startup, 1),
        "serve_flags": extra, "requests": len(results), "by_kind": by_kind,
        "errors": len(results) - len(ok), "error_examples": [r["answer"] for r in results if r["status"] != 200][:5],
        "throughput_rps": round(len(ok) / elapsed, 2),
        "latency_ms": {q: round(float(np.percentile(lat, int(q[1:]))) * 1000, 1) for q in ("p50", "p90", "p99")},
        "latency_max_ms": round(float(lat.max()) * 1000, 1),
        "mean_batch_size": round(metrics.get("tuneforge_batch_size_sum", 0)
                                 / max(1, metrics.get("tuneforge_batch_size_count", 0)), 2),
        "generated_tokens": metrics.get("tuneforge_generated_tokens_total", 0),
        "parity": {"compared": len(ok), "unique_inputs": len({r["text"] for r in ok}), "mismatches": len(mismatches),
                   "examples": [{"text": r["text"], "kind": r["kind"], "served": r["answer"],
                                 "offline": offline[r["text"]]}
                                for r in mismatches[:5]]},
        "probes": probe, "schemathesis": fuzzed, "alive_after_fuzzing": alive,
        "monitor_load_phase": mon["verdict"]["line"], "monitor_with_fuzz_traffic": mon_fuzz["verdict"]["line"],
        "artifacts": str(tmp),
    }
    passed = (summary["errors"] == 0 and not mismatches and all(v["ok"] for v in probe.values())
              and fuzzed["exit_code"] == 0 and alive)
    summary["passed"] = passed
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: summary[k] for k in ("requests", "errors", "throughput_rps", "latency_ms", "mean_batch_size",
                                              "parity", "alive_after_fuzzing", "passed")}, indent=2,
                     ensure_ascii=False))
    print("probes:", {k: v["got"] for k, v in probe.items()})
    print("schemathesis:", fuzzed["exit_code"], *fuzzed["summary"][-8:], sep="\n  ")
    print("monitor, load-phase log (test-split inputs):", summary["monitor_load_phase"])
    print("monitor, whole log (with schemathesis' random inputs):", summary["monitor_with_fuzz_traffic"])
    print(f"summary written to {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
