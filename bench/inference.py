"""Inference speed: tuneforge's decode loop against transformers' ``generate``, in one run, same machine.

    flock /tmp/tuneforge-heavy.lock env OMP_NUM_THREADS=2 python bench/inference.py --out bench/INFERENCE_RESULTS.md

Generation: SmolLM2-135M-Instruct (the demo model) answering the demo's held-out product listings
(the extraction prompt), greedy, at batch 1 and batch 16. The baseline is the pre-session path
(length-sorted batches through ``model.generate``, kept as ``tasks.decoding.generate_with_transformers``
for soft prompts), in float32 (what a user gets by default) and in the dtype ``eval.dtype: auto`` picks
on this machine; answers are compared token for token where the dtypes match. Tokens/s counts generated
tokens. Scoring: the preference task's held-out scoring (``predict``) of hh_harmless pairs, float32
against ``eval.dtype`` auto, same run, one timed pass each after a 4-pair warm-up of each.
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
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tuneforge.data.readers import Record
from tuneforge.infer import Generated, Sampling
from tuneforge.infer.precision import resolve_dtype, weights_in
from tuneforge.recipe import recipe_from_dict
from tuneforge.tasks import get_task
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.tasks.decoding import (
    generate_with_transformers,
    generate_answers,
    prompt_ids,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO_TEST = ROOT / "src/tuneforge/resources/demo/products_test.jsonl"
HH_TEST = ROOT.parent / "shared/datasets/hh_harmless/pairs_test.jsonl"
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
    """Four sides on the same prompts, interleaved twice (a load spike from elsewhere hits all); means reported.

    generate fp32, ours fp32, generate bf16, ours bf16 (``eval.dtype: bfloat16``; "auto" decodes in float32).
    """
    chats = prompts(n)
    encoded = [prompt_ids(tok, c) for c in chats]
    rule = Sampling(max_new_tokens=new)

    def old(dtype: Any) -> Callable[[], list[Generated]]:
        def run() -> list[Generated]:
            with weights_in(model, dtype, "decode"):
                return generate_with_transformers(model, tok, encoded, rule, batch, "transformers")
        return run

    def fast(dtype: Any) -> Callable[[], list[Generated]]:
        return lambda: generate_answers(model, tok, chats, max_new_tokens=new, batch_size=batch, desc="infer",
                                        dtype=dtype)

    sides = {"hf_fp32": old("float32"), "ours_fp32": fast("float32"), "hf_auto": old("bfloat16"),
             "ours_auto": fast("bfloat16")}
    for dtype in ("float32", "bfloat16"):  # warm-up (allocator, kernels) in both dtypes
        generate_answers(model, tok, chats[:2], max_new_tokens=4, batch_size=batch, dtype=dtype)
    outs: dict[str, list[Generated]] = {}
    seconds = {k: 0.0 for k in sides}
    for _ in range(2):
        for k, fn in sides.items():
            outs[k], t = timed(fn)
            seconds[k] += t / 2
    tps = {k: sum(len(g.tokens) for g in outs[k]) / seconds[k] for k in sides}

    def same(a: str, b: str) -> int:
        return sum(x.tokens == y.tokens for x, y in zip(outs[a], outs[b]))

    return {"prompts": n, "batch": batch, "max_new_tokens": new, "seconds": seconds, "tps": tps,
            "tokens": {k: sum(len(g.tokens) for g in outs[k]) for k in sides},
            "same_fp32": same("hf_fp32", "ours_fp32"), "same_auto": same("hf_auto", "ours_auto"),
            "auto_vs_fp32": same("hf_fp32", "ours_auto")}


def scoring(model: Any, tok: Any, path: Path, hh: Path, pairs: int) -> dict[str, Any]:
    """The preference task's held-out scoring of ``pairs`` hh_harmless pairs: float32 against ``eval.dtype`` auto.

    The model is the base under a fresh LoRA adapter (r 16 on every projection, as a tuned run holds it), so
    each answer is scored by the policy and by the reference (adapter off), as in a DPO run's evaluation.
    Generation for the judge is off (``eval.judge_prompts: 0``): scoring only.
    """
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    rows = [json.loads(line) for line in hh.read_text(encoding="utf-8").splitlines()[:pairs]]
    out: dict[str, Any] = {"pairs": len(rows)}
    logps: dict[str, torch.Tensor] = {}
    for dtype in ("warm-float32", "warm-auto", "float32", "auto"):  # the first two: 4 pairs each, not timed
        rows_now = rows[:4] if dtype.startswith("warm") else rows
        dtype = dtype.removeprefix("warm-")
        recipe = recipe_from_dict({"task": "preference", "model": str(path), "method": {"name": "lora"},
                                   "data": {"train": str(hh)}, "output": "/tmp/bench-inference-unused",
                                   "train": {"max_length": 512},
                                   "eval": {"batch_size": 16, "dtype": dtype, "judge_prompts": 0}})
        task = get_task(recipe, tok, "decoder")
        examples = task.parse([Record(str(hh), i + 1, r) for i, r in enumerate(rows_now)], "the test data")
        start = time.perf_counter()
        preds = task.predict(model, examples)
        seconds = time.perf_counter() - start
        if rows_now is rows:
            out[dtype] = seconds
        logps[dtype] = torch.tensor([p["logp"][:2] for p in preds], dtype=torch.float64)  # (pairs, 2): chosen, rejected
    model.unload()
    f32, auto = logps["float32"], logps["auto"]
    out["max_abs_logp_diff"] = float((f32 - auto).abs().max())
    out["same_preference"] = int(((f32[:, 0] > f32[:, 1]) == (auto[:, 0] > auto[:, 1])).sum())
    return out


def write(out: Path, rows: list[dict[str, Any]], score: dict[str, Any] | None, argv: str) -> None:
    """The measured tables; a ``## Notes`` section already in ``out`` (written by hand) is kept."""
    auto = resolve_dtype("auto", torch.device("cpu"), "score")
    auto_name = str(auto or torch.float32).removeprefix("torch.")
    lines = ["# Inference results", "", f"Command: `{argv}`", "", f"Machine: {machine()}", "",
             "## Generation (SmolLM2-135M-Instruct, greedy, demo extraction prompts)", "",
             ("generate: length-sorted batches through transformers' `model.generate` (the pre-session "
              "`tasks.decoding.generate`); ours: `tuneforge.infer` (`tasks.decoding.generate` now). "
              "`eval.dtype: auto` decodes in float32 (the model's own dtype); the bf16 columns are "
              "`eval.dtype: bfloat16`. The four sides run interleaved twice; each "
              "figure is the mean of its two runs. Ratios are against generate in float32 (a user's default) and "
              "against generate in the same dtype."),
             "", "| batch | prompts | max new | generate fp32 tok/s | ours fp32 tok/s | generate bf16 tok/s | "
             "ours bf16 tok/s | ours bf16 / generate fp32 | ours / generate, same dtype | "
             "identical fp32 | identical bf16 | bf16 = fp32 answers |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, n = r["tps"], r["prompts"]
        lines.append(f"| {r['batch']} | {n} | {r['max_new_tokens']} | {t['hf_fp32']:.1f} | {t['ours_fp32']:.1f} | "
                     f"{t['hf_auto']:.1f} | {t['ours_auto']:.1f} | {t['ours_auto'] / t['hf_fp32']:.2f}x | "
                     f"{t['ours_auto'] / t['hf_auto']:.2f}x | {r['same_fp32']}/{n} | {r['same_auto']}/{n} | "
                     f"{r['auto_vs_fp32']}/{n} |")
    if score is not None:
        f32, au = score["float32"], score["auto"]
        lines += ["", f"## Held-out DPO scoring (hh_harmless pairs_test, `task.predict`; auto = {auto_name} here)", "",
                  "SmolLM2 under a fresh LoRA adapter (r 16, every projection): policy and reference scores.", "",
                  "| pairs | float32 s | auto s | auto / float32 | max abs logp difference | same preferred answer |",
                  "|---|---|---|---|---|---|",
                  f"| {score['pairs']} | {f32:.1f} | {au:.1f} | {au / f32:.2f}x | {score['max_abs_logp_diff']:.3f} | "
                  f"{score['same_preference']}/{score['pairs']} |"]
    notes = out.read_text(encoding="utf-8").split("## Notes", 1) if out.is_file() else []
    tail = ["", "## Notes" + notes[1].rstrip("\n")] if len(notes) == 2 else []
    out.write_text("\n".join(lines + tail) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/INFERENCE_RESULTS.md")
    parser.add_argument("--new", type=int, default=48, help="max new tokens per answer")
    parser.add_argument("--n1", type=int, default=4, help="prompts at batch 1")
    parser.add_argument("--n16", type=int, default=32, help="prompts at batch 16")
    parser.add_argument("--pairs", type=int, default=200, help="hh_harmless pairs scored (0: skip)")
    parser.add_argument("--hh", type=Path, default=HH_TEST, help="hh_harmless pairs_test.jsonl")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name or local folder")
    args = parser.parse_args()
    path = resolve_model(args.model).path
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    rows = [generation(model, tok, args.n1, 1, args.new), generation(model, tok, args.n16, 16, args.new)]
    for r in rows:
        print(json.dumps(r), flush=True)
    score = scoring(model, tok, path, args.hh, args.pairs) if args.pairs else None
    print(json.dumps(score))
    write(args.out, rows, score, "python bench/inference.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                         if k != "out"))


if __name__ == "__main__":
    main()
