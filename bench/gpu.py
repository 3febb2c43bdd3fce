"""The GPU path, measured: tokens/s and model FLOPs utilisation of tuneforge's own training loop.

Why a bench of its own: on a CPU the question is tuneforge against plain transformers (``speed.py``).
On a GPU the issue asks whether the loop keeps the card busy with bf16 autocast, SDPA attention and,
optionally, ``torch.compile``. This runs ``fit`` (the loop ``tuneforge train`` runs, with
``train.dtype: auto``, which is bf16 on such a card) on full-length rows of random tokens (continued
pre-training: every position carries loss, no padding), for two shapes:

* SmolLM2-135M's (30 layers, 576 wide, 9 heads, 3 key/value heads, 49152-token vocabulary);
* a ~1.1B Llama (TinyLlama's shape: 22 layers, 2048 wide, 5632 MLP, 32 heads, 4 key/value heads).

Both are randomly initialised: weights do not change the speed, and the GPU machine has no model
files. Each runs with and without ``train.speed.compile``, full fine-tuning (AdamW) by default. Reported:

* tokens/s over the steps after warm-up, from the run's own metrics log;
* model FLOPs per token: 6 x the matmul parameters (the vocabulary head included) plus causal
  attention, 6 x 2 x layers x width x (mean context), PaLM's appendix B convention with the causal
  half; LoRA counts 4 x the frozen parameters (no weight gradients) plus 6 x the adapters';
* MFU against a bf16 matrix product timed on the same card in the same run, and against the card's
  dense bf16 datasheet figure where the name is known;
* the peak GPU memory ``torch.cuda`` allocated.

Checkpoints are not written (disk time, not the loop's; ``_checkpoint`` is replaced while ``fit`` runs).

Run on the GPU machine (a few minutes): ``python bench/gpu.py``; here, as a smoke test of the script:
``python bench/gpu.py --device cpu --tiny``. Writes ``bench/results/gpu.json`` and ``bench/GPU_RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "llama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False, rope_theta=10000.0),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True, rope_theta=10000.0),
}
DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                         "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}  # dense


def build_model(shape: str, max_length: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=max(max_length, 2048), rms_norm_eps=1e-5,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def flops_per_token(config: Any, max_length: int, method: str, r: int) -> float:
    """Training FLOPs a token requires (see the module docstring)."""
    d, f, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    linears = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    matmul = layers * sum(i * o for i, o in linears) + d * vocab
    attention = 6 * 2 * layers * d * (max_length + 1) / 2  # QK^T and PV over the mean causal context
    if method == "lora":
        adapters = layers * sum(r * (i + o) for i, o in linears)
        return 4 * matmul + 6 * adapters + attention
    return 6 * matmul + attention


def matmul_peak_tflops(device: str) -> float:
    """Best of three sizes of a bf16 (GPU) or fp32 (CPU) matrix product on ``device``."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    best = 0.0
    for n in ((4096, 8192) if device == "cuda" else (512, 1024)):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        _sync(device)
        reps = 20 if device == "cuda" else 3
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e12)
    return best


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_one(shape: str, *, method: str, compile_blocks: bool, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator

    import tuneforge.train.loop as loop
    from tuneforge.methods import get_method
    from tuneforge.models.tiny import build_tiny_tokenizer
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.run.folder import RunDir
    from tuneforge.tasks.base import Encoded, get_task
    from tuneforge.train.preflight import resolve_precision

    steps = args.warmup + args.steps
    out = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    recipe = recipe_from_dict({
        "task": "language_modeling", "model": "smollm2-135m-instruct", "output": str(out / "run"),
        "data": {"train": str(out / "unused.jsonl")},
        "method": {"name": method, **({"r": args.lora_r, "alpha": 2.0 * args.lora_r} if method == "lora" else {})},
        "train": {"max_steps": steps, "batch_size": args.batch, "lr": 1e-5, "warmup_steps": 0,
                  "max_length": args.max_length, "seed": 0, "speed": {"compile": compile_blocks}, "dtype": "auto",
                  "device": args.device},
    }, check_files=False)
    precision, _ = resolve_precision(recipe.train, args.device)
    model = build_model(shape, args.max_length)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, vocab, (steps * args.batch, args.max_length), generator=generator).tolist()
    train = [Encoded(input_ids=ids, labels=list(ids), n_answer=len(ids) - 1) for ids in rows]
    task = get_task(recipe, build_tiny_tokenizer(), "decoder")
    method_ = get_method(recipe.method)
    model = method_.prepare(model, "causal_lm")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with mock.patch.object(loop, "_checkpoint", lambda *a, **k: None):  # disk time, not the loop's
        state = loop.fit(model=model, task=task, method=method_, train=train, validate=None, cfg=recipe.train,
                         run=RunDir(out / "run"), accelerator=Accelerator(cpu=args.device == "cpu",
                                                                          mixed_precision=precision), resume=False)
    log = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    log = [e for e in log if "tokens_per_s" in e]
    first, last = log[args.warmup - 1], log[-1]
    seconds = last["tokens"] / last["tokens_per_s"] - first["tokens"] / first["tokens_per_s"]
    tokens_per_s = (last["tokens"] - first["tokens"]) / seconds
    per_token = flops_per_token(model.config, args.max_length, method, args.lora_r)
    return {"shape": shape, "method": method, "compile": compile_blocks, "precision": precision,
            "attention": model.config._attn_implementation, "steps_timed": args.steps, "tokens_per_s": tokens_per_s,
            "tflops": per_token * tokens_per_s / 1e12, "flops_per_token": per_token, "loss_last": last["loss"],
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
            "steps": state.step}


def _card(device: str) -> tuple[str, float | None]:
    import torch

    if device != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name()
    spec = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    return name, spec


def render(result: dict[str, Any]) -> str:
    lines = ["# The GPU path: tokens/s and model FLOPs utilisation", "",
             f"Card: {result['card']}; measured matmul peak {result['peak_tflops']:.0f} TFLOP/s"
             + (f", datasheet {result['datasheet_tflops']:.0f}" if result["datasheet_tflops"] else "")
             + f"; torch {result['torch']}, transformers {result['transformers']}; {result['date']}.", "",
             f"Command: `{result['command']}`", "",
             "| shape | method | compile | precision | attention | tokens/s | TFLOP/s | MFU (measured peak) "
             "| MFU (datasheet) | peak GPU GB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        sheet = f"{r['mfu_datasheet']:.1%}" if r.get("mfu_datasheet") is not None else "-"
        gpu = f"{r['peak_gpu_gb']:.1f}" if r["peak_gpu_gb"] is not None else "-"
        lines.append(f"| {r['shape']} | {r['method']} | {r['compile']} | {r['precision']} | {r['attention']} | "
                     f"{r['tokens_per_s']:,.0f} | {r['tflops']:.1f} | {r['mfu']:.1%} | {sheet} | {gpu} |")
    lines += ["", "How it is measured: see the docstring of `bench/gpu.py` (FLOPs per token, warm-up steps left "
              "out of the timing, random weights and tokens, checkpoints not written)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import datetime as dt

    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", default="smollm2-135m,llama-1.1b")
    parser.add_argument("--tiny", action="store_true", help="the tiny shape only (a smoke test of this script)")
    parser.add_argument("--method", default="full", help="full, lora, or both as a comma list")
    parser.add_argument("--compile", default="no,yes", help="no, yes or both as a comma list")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "bench" / "GPU_RESULTS.md")
    args = parser.parse_args(argv)
    if args.tiny:
        args.shapes, args.batch, args.max_length, args.steps, args.warmup = "tiny", 2, 64, 2, 1
    card, sheet = _card(args.device)
    peak = matmul_peak_tflops(args.device)
    print(f"{card}: matmul peak {peak:.1f} TFLOP/s", flush=True)
    runs = []
    for shape in args.shapes.split(","):
        for method in args.method.split(","):
            for compiled in args.compile.split(","):
                r = run_one(shape, method=method, compile_blocks=compiled == "yes", args=args)
                r["mfu"] = r["tflops"] / peak
                r["mfu_datasheet"] = r["tflops"] / sheet if sheet else None
                print(json.dumps(r), flush=True)
                runs.append(r)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    result = {"card": card, "peak_tflops": peak, "datasheet_tflops": sheet, "torch": torch.__version__,
              "transformers": transformers.__version__, "runs": runs,
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python bench/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.markdown.write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
