"""Inference speed: tuneforge's decode loop against transformers' ``generate``, in one run, same machine.

    flock /tmp/tuneforge-heavy.lock env OMP_NUM_THREADS=2 python bench/inference.py --out bench/INFERENCE_RESULTS.md

Generation: SmolLM2-135M-Instruct (the demo model) answering the demo's held-out product listings
(the extraction prompt), greedy, at batch 1 and batch 16. The baseline is the pre-session path
(length-sorted batches through ``model.generate``, kept as ``tasks.decoding.generate_with_transformers``
for soft prompts); both sides' answers are compared token for token. Tokens/s counts generated tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from tuneforge.infer import Generated, Sampling
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.tasks.decoding import (
    generate_with_transformers,
    generate_answers,
    prompt_ids,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO_TEST = ROOT / "src/tuneforge/resources/demo/products_test.jsonl"
INSTRUCTION = ("Extract these fields from the text as a JSON object: brand, product, colour, size, material, price. "
               "Use null for a field the text does not state. Answer with the JSON object only.")


def machine() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    return f"{name}; torch {torch.__version__}, {torch.get_num_threads()} threads; Python {platform.python_version()}"


def prompts(n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in DEMO_TEST.read_text(encoding="utf-8").splitlines()[:n]]
    return [[{"role": "user", "content": f"{INSTRUCTION}\n\n{r['text']}"}] for r in rows]


def timed(fn: Callable[[], list[Generated]]) -> tuple[list[Generated], float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def generation(model: Any, tok: Any, n: int, batch: int, new: int) -> dict[str, Any]:
    """Both sides on the same prompts, alternating base, ours, base, ours; each side's figure is its mean."""
    chats = prompts(n)
    encoded = [prompt_ids(tok, c) for c in chats]
    rule = Sampling(max_new_tokens=new)

    def old() -> list[Generated]:
        return generate_with_transformers(model, tok, encoded, rule, batch, "transformers")

    def fast() -> list[Generated]:
        return generate_answers(model, tok, chats, max_new_tokens=new, batch_size=batch, desc="infer")

    generate_answers(model, tok, chats[:2], max_new_tokens=4, batch_size=batch)  # warm-up (allocator, kernels)
    base, t_base1 = timed(old)  # interleaved twice: a load spike from elsewhere hits both sides
    ours, t_ours1 = timed(fast)
    _, t_base2 = timed(old)
    _, t_ours2 = timed(fast)
    t_base, t_ours = (t_base1 + t_base2) / 2, (t_ours1 + t_ours2) / 2
    tokens = sum(len(g.tokens) for g in ours)
    same = sum(a.tokens == b.tokens for a, b in zip(base, ours))
    return {"prompts": n, "batch": batch, "max_new_tokens": new, "tokens": tokens,
            "base_tokens": sum(len(g.tokens) for g in base), "base_s": t_base, "ours_s": t_ours,
            "base_tps": sum(len(g.tokens) for g in base) / t_base, "ours_tps": tokens / t_ours,
            "speedup": (tokens / t_ours) / (sum(len(g.tokens) for g in base) / t_base), "same": same}


def write(out: Path, rows: list[dict[str, Any]], argv: str) -> None:
    lines = ["# Inference results", "", f"Command: `{argv}`", "", f"Machine: {machine()}", "",
             "## Generation (SmolLM2-135M-Instruct, greedy, demo extraction prompts)", "",
             ("Baseline: length-sorted batches through transformers' `model.generate` (the pre-session "
              "`tasks.decoding.generate`); ours: `tuneforge.infer` (`tasks.decoding.generate` now). Run alternately "
              "base, ours, base, ours; each figure is the mean of its two runs."),
             "", "| batch | prompts | max new | tokens | generate tok/s | ours tok/s | ratio | answers identical |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['prompts']} | {r['max_new_tokens']} | {r['tokens']} | {r['base_tps']:.1f} | "
                     f"{r['ours_tps']:.1f} | {r['speedup']:.2f}x | {r['same']}/{r['prompts']} |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/INFERENCE_RESULTS.md")
    parser.add_argument("--new", type=int, default=48, help="max new tokens per answer")
    parser.add_argument("--n1", type=int, default=4, help="prompts at batch 1")
    parser.add_argument("--n16", type=int, default=32, help="prompts at batch 16")
    args = parser.parse_args()
    path = resolve_model("smollm2-135m-instruct").path
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    rows = [generation(model, tok, args.n1, 1, args.new), generation(model, tok, args.n16, 16, args.new)]
    for r in rows:
        print(json.dumps(r))
    write(args.out, rows, "python bench/inference.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                  if k != "out"))


if __name__ == "__main__":
    main()
