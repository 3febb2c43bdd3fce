"""Speed and memory: tuneforge against plain transformers on the same model, data and budget, in one run.

    python bench/speed.py [--examples 320] [--val 64] [--batch 8] [--max-length 256] [--lock run|none]

Both sides fine-tune ``smollm2-135m-instruct`` with LoRA (r 16, alpha 32, dropout 0.05, every linear
layer but the head) on SNIPS slot extraction: the request in, its slots as a compact JSON object out
(``slots_train.jsonl``, first ``--examples`` rows, prompts of mixed length), for one pass over those
rows at ``--batch`` examples per optimizer step, max_length 256, AdamW at lr 2e-4 with a linear decay
and no warm-up, gradient clipping at 1.0, seed 0. The prompts and answers are tokenised once, by
tuneforge's own chat formatting, so both sides see identical token ids and the same answer-only
labels (completion-only loss); only the training differs:

* ``baseline``: transformers ``Trainer`` + peft with their defaults: ``DataCollatorForSeq2Seq`` pads
  each batch to its longest row, the model computes the full (B, T, V) logits and the loss from them.
* ``tuneforge``: tuneforge's one training loop (``train.loop.fit``) with packing (each micro-batch one
  row, ``train.speed.pack_width``), LoRA dropout folded into ``lora_A`` (``accel/lora_dropout.py``: the same
  Bernoulli dropout, drawn and applied cheaply), answer-only hidden states and the chunked linear +
  cross-entropy, and micro-batches (``--tf-micro`` examples,
  gradient-accumulated to the same ``--batch`` examples per step; the loss is normalised by the
  answer tokens of the whole step, so the update is the same as one big batch).

Each side runs in its own subprocess, one after the other under ``/tmp/tuneforge-heavy.lock``
(``--lock run``), with ``OMP_NUM_THREADS`` as given (2 on the reference machine); peak resident
memory is that child's own ``ru_maxrss`` from ``os.wait4``. Measured per side: wall time of the whole
child, training time (the training call alone), useful tokens per second (answer tokens, the ones that
carry loss, divided by training time), and the validation loss after training: the mean answer-token
cross-entropy over the same ``--val`` rows of ``slots_test.jsonl``, computed by the same plain
function on both sides (one row at a time, full logits, no tuneforge code).

Model FLOPs utilisation: the FLOPs the work *requires*, counted from the model's shapes, divided by
training time and by the fp32 matrix-product peak measured at the start of the same run (best of
several ``torch.mm`` of 2048 and 3072 squares). Required per real (non-padding) token: forward 2 x the
weights of every linear layer in the body; backward 2 x those again for the input gradients (the
frozen base weights need no weight gradient; the first layer's q/k/v input gradient is not needed
and not counted); LoRA A and B: forward, input gradient and weight gradient, 2 x their size each;
causal attention (QK^T and AV, 4 x d x t per token at position t, x3 for backward); the vocabulary
head only at answer positions (forward and input gradient: the tied embedding is frozen). Norms,
activations and softmax are not counted (the usual MFU convention). The same required count is used
for both sides, so padding, prompt-position logits and recomputation are cost, never credit.

Outputs: ``bench/results/speed.json`` and ``bench/RESULTS.md`` (machine, versions, date, command).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SNIPS = Path(os.environ.get("TUNEFORGE_SNIPS", ROOT.parent / "shared" / "datasets" / "snips"))
LOCK = Path("/tmp/tuneforge-heavy.lock")
RESULTS = ROOT / "bench" / "results"
MARKDOWN = ROOT / "bench" / "RESULTS.md"
MODEL = "smollm2-135m-instruct"
INSTRUCTION = "Extract the slots of this request as a JSON object mapping each slot name to its value."
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.05}
LR = 2e-4
SEED = 0
PLAIN = "+unfused-fp32base"  # side-name suffix: train.speed.fused_lora off, train.speed.frozen_dtype float32
sys.path.insert(0, str(ROOT / "src"))


# ----------------------------------------------------------------------------- shared by both sides
def slot_rows(path: Path, n: int) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if len(rows) == n:
                break
            r = json.loads(line)
            rows.append({"prompt": f"{INSTRUCTION}\n\nRequest: {r['text']}",
                         "completion": json.dumps(r["slots"], ensure_ascii=False)})
    return rows


def encoded_rows(tokenizer: Any, rows: list[dict[str, str]], max_length: int) -> list[Any]:
    """tuneforge's chat formatting and answer-only labels; both sides train on exactly these ids."""
    from tuneforge.tasks.base import encode_prompt_answer

    return [encode_prompt_answer(tokenizer, [{"role": "user", "content": r["prompt"]}], r["completion"], max_length)
            for r in rows]


def validation_loss(model: Any, encoded: list[Any]) -> float:
    """Mean answer-token cross-entropy over ``encoded``, one row at a time, plain full-logits forward."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for e in encoded:
            ids = torch.tensor([e.input_ids])
            labels = torch.tensor([e.labels])
            logits = model(input_ids=ids).logits[0, :-1].float()  # (T - 1, V)
            target = labels[0, 1:]  # (T - 1,)
            keep = target != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def required_flops(config: Any, encoded: list[Any], r: int) -> dict[str, float]:
    """FLOPs that training on ``encoded`` requires (see the module docstring), by part."""
    d, f, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    linears = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]  # q k v o gate up down: (in, out)
    base = layers * sum(i * o for i, o in linears)
    lora = layers * sum(r * (i + o) for i, o in linears)
    first_qkv = d * d + 2 * d * kv  # layer 0's q/k/v input gradient: nothing below it trains
    tokens = sum(len(e.input_ids) for e in encoded)
    answers = sum(e.n_answer for e in encoded)
    attn_pairs = sum(len(e.input_ids) * (len(e.input_ids) + 1) // 2 for e in encoded)  # causal (query, key) pairs
    parts = {
        "base_forward": 2.0 * base * tokens,
        "base_input_grad": 2.0 * (base - first_qkv) * tokens,
        # fwd, weight grad, input grad (not layer 0 q/k/v)
        "lora": 2.0 * (3 * lora - r * (3 * d + d + 2 * kv)) * tokens,
        "attention": 3 * layers * 4.0 * d * attn_pairs,
        "head": 2 * 2.0 * d * vocab * answers,
    }
    parts["total"] = sum(parts.values())
    return parts


def matmul_peak(threads: int, dtype: str = "float32") -> dict[str, float]:
    """Best ``torch.mm`` rate in ``dtype`` on this machine now (GFLOP/s), the denominator of the utilisation."""
    import torch

    torch.set_num_threads(threads)
    best: dict[str, float] = {}
    for n in (2048, 3072):
        a, b = torch.randn(n, n).to(getattr(torch, dtype)), torch.randn(n, n).to(getattr(torch, dtype))
        torch.mm(a, b)
        rates = []
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, b)
            rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
        best[str(n)] = max(rates)
    return {"gflops": max(best.values()), "by_size": best}


# ----------------------------------------------------------------------------- the two sides
def _data(args: argparse.Namespace) -> tuple[Any, Path, list[Any], list[Any]]:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.models.resolve import resolve_model

    resolved = resolve_model(args.model)
    tokenizer = load_tokenizer(resolved.path)
    train = encoded_rows(tokenizer, slot_rows(SNIPS / "slots_train.jsonl", args.examples), args.max_length)
    val = encoded_rows(tokenizer, slot_rows(SNIPS / "slots_test.jsonl", args.val), args.max_length)
    return tokenizer, resolved.path, train, val


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokenizer, path, train, val = _data(args)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in train]
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="speed-baseline-"),
                              per_device_train_batch_size=args.batch,
                              num_train_epochs=1, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0,
                              max_grad_norm=1.0, weight_decay=0.0, seed=SEED, save_strategy="no", report_to=[],
                              logging_steps=10, use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
                              disable_tqdm=True, bf16=args.child == "baseline_bf16")
    trainer = Trainer(model=model, args=targs, train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    padded = sum(max(len(train[i].input_ids) for i in range(s, min(s + args.batch, len(train)))) *
                 len(range(s, min(s + args.batch, len(train)))) for s in range(0, len(train), args.batch))
    return {"train_seconds": seconds, "val_loss": validation_loss(model, val), "steps": trainer.state.global_step,
            "precision": "bf16" if targs.bf16 else "no", "tokens_processed_approx": padded,
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def run_tuneforge(args: argparse.Namespace) -> dict[str, Any]:
    from accelerate import Accelerator

    from tuneforge.methods import get_method
    from tuneforge.models.loading import load_model
    from tuneforge.models.resolve import resolve_model
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.run.folder import RunDir
    from tuneforge.tasks.base import get_task
    from tuneforge.train.loop import fit
    from tuneforge.train.preflight import resolve_frozen_dtype, resolve_precision

    tokenizer, _, train, val = _data(args)
    out = Path(tempfile.mkdtemp(prefix="speed-tuneforge-"))
    micro = int(args.tf_micro) if args.tf_micro else args.batch
    tokens = args.tf_micro_tokens[0] if args.tf_micro_tokens else None  # a child gets at most one
    if tokens:  # the step's examples re-split by tokens: fixed-size micro-batches only feed it
        micro = args.batch
    if args.batch % micro:
        raise SystemExit(f"--tf-micro {micro} must divide --batch {args.batch}")
    recipe = recipe_from_dict({
        "task": "generation", "model": args.model, "output": str(out / "run"),
        "data": {"train": str(SNIPS / "slots_train.jsonl")},  # not read: the rows are encoded above
        "method": {"name": "lora", **LORA},
        "train": {"epochs": 1, "batch_size": micro, "grad_accum": args.batch // micro, "lr": LR, "warmup_steps": 0,
                  "scheduler": "linear", "max_grad_norm": 1.0, "max_length": args.max_length, "seed": SEED,
                  "gradient_checkpointing": args.tf_checkpointing, "dtype": args.tf_dtype,
                  "speed": {"packing": not args.tf_no_packing, "loss_chunk": args.tf_loss_chunk,
                            "pack_width": args.tf_pack_width or tokens or micro * args.max_length,
                            "micro_batch_tokens": tokens, "compile": args.tf_compile,
                            "compact_activations": args.tf_compact == "yes", "fused_lora": args.tf_fused == "yes",
                            "frozen_dtype": args.tf_frozen_dtype}},
    }, check_files=False)
    resolved = resolve_model(args.model)
    precision, notes = resolve_precision(recipe.train, "cpu")  # as `tuneforge train` decides
    print(f"tuneforge precision: {precision} {' '.join(notes)}", flush=True)
    task = get_task(recipe, tokenizer, resolved.kind)
    method = get_method(recipe.method)
    model = method.prepare(load_model(resolved, head="causal_lm"), "causal_lm")
    start = time.perf_counter()
    state = fit(model=model, task=task, method=method, train=train, validate=None, cfg=recipe.train,
                run=RunDir(out / "run"), accelerator=Accelerator(cpu=True, mixed_precision=precision), resume=False)
    seconds = time.perf_counter() - start
    frozen = resolve_frozen_dtype(recipe.train, "cpu")
    return {"train_seconds": seconds, "val_loss": validation_loss(model, val), "steps": state.step,
            "precision": precision, "frozen_dtype": str(frozen).replace("torch.", "") if frozen else "float32",
            "loop_seconds": state.seconds, "losses": [h["loss"] for h in _log(out / "run") if "loss" in h]}


def _log(run: Path) -> list[dict[str, Any]]:
    log = run / "metrics.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


SIDES = {"baseline": run_baseline, "baseline_bf16": run_baseline, "tuneforge": run_tuneforge}


# ----------------------------------------------------------------------------- the parent
def _child(side: str, micro: int | None, args: argparse.Namespace, out: Path, tokens: int | None = None,
           side_name: str = "", malloc: str = "system") -> dict[str, Any]:
    """Run one side in a subprocess; its own peak RSS comes from ``os.wait4``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--child-out", str(out),
           "--examples", str(args.examples), "--val", str(args.val), "--batch", str(args.batch),
           "--max-length", str(args.max_length), "--model", args.model, "--tf-loss-chunk", str(args.tf_loss_chunk),
           *(["--tf-pack-width", str(args.tf_pack_width)] if args.tf_pack_width else []),
           *(["--tf-micro", str(micro)] if micro else []), *(["--tf-no-packing"] if args.tf_no_packing else []),
           *(["--tf-checkpointing"] if args.tf_checkpointing else []), *(["--tf-compile"] if args.tf_compile else []),
           *(["--tf-compact", "yes"] if "+compact" in side_name else []),
           "--tf-dtype", args.tf_dtype,
           *(["--tf-fused", "no", "--tf-frozen-dtype", "float32"] if side_name.endswith(PLAIN)
             else ["--tf-fused", args.tf_fused, "--tf-frozen-dtype", args.tf_frozen_dtype]),
           *(["--tf-micro-tokens", str(tokens)] if tokens else [])]
    from tuneforge.accel.allocator import preload_env

    env = preload_env(malloc)  # "auto": as the `tuneforge` command picks
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {side} side failed (exit {os.waitstatus_to_exitcode(status)}); see its output above")
    result = json.loads(out.read_text())
    return {**result, "wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def _machine() -> dict[str, Any]:
    import torch
    import transformers
    import peft
    import accelerate

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "accelerate": accelerate.__version__,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=320, help="training rows, seen once by each side")
    parser.add_argument("--val", type=int, default=64, help="held-out rows of slots_test.jsonl for the loss")
    parser.add_argument("--batch", type=int, default=8, help="examples per optimizer step (both sides)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--tf-micro", default=None,
                        help="tuneforge micro-batch in examples (default --batch); "
                             "a comma list runs one tuneforge side each")
    parser.add_argument("--tf-loss-chunk", type=int, default=1024)
    parser.add_argument("--tf-no-packing", action="store_true")
    parser.add_argument("--tf-pack-width", type=int, default=None,
                        help="tuneforge packed row width in tokens (default: the micro-batch's examples x max_length, "
                             "so each micro-batch is one row with no padding)")
    parser.add_argument("--tf-checkpointing", action="store_true", help="tuneforge side: gradient checkpointing")
    parser.add_argument("--tf-compile", action="store_true", help="tuneforge side: torch.compile the blocks")
    parser.add_argument("--tf-compact", choices=["no", "yes", "both"], default="no",
                        help="tuneforge sides: train.speed.compact_activations (saved activations kept in bf16); "
                             "both: each tuneforge side without and with it")
    parser.add_argument("--tf-micro-tokens", type=lambda v: [int(x) for x in v.split(",")], default=[],
                        help="comma list: one more tuneforge side each with train.speed.micro_batch_tokens "
                             "(each step's "
                             "examples split into micro-batches of at most this many tokens)")
    parser.add_argument("--tf-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="tuneforge side: train.dtype "
                             "(auto is float32 on a CPU; bfloat16 needs AMX or AVX-512-BF16)")
    parser.add_argument("--tf-fused", choices=["yes", "no"], default="yes",
                        help="tuneforge side: train.speed.fused_lora (each LoRA layer's forward and backward fused)")
    parser.add_argument("--tf-frozen-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="tuneforge side: train.speed.frozen_dtype "
                             "(auto: bf16 frozen base on AMX CPUs and bf16 GPUs)")
    parser.add_argument("--tf-plain-too", action="store_true",
                        help=f"each tuneforge side once more ({PLAIN}): unfused LoRA layers, float32 frozen base")
    parser.add_argument("--tf-allocator", default="auto",
                        help="tuneforge sides' malloc, as TUNEFORGE_ALLOCATOR takes it (auto: what `tuneforge` uses); "
                        "a comma list runs each side once per allocator (the extra ones named side@malloc)")
    parser.add_argument("--baseline-allocator", default="system",
                        help="the baseline's malloc (system: plain transformers as most run it); a comma list as above")
    parser.add_argument("--model", default=MODEL, help="a registry name or model folder (a tiny one for a smoke test)")
    parser.add_argument("--sides", default="baseline,tuneforge",
                        help="comma list of baseline, baseline_bf16 (Trainer with bf16=True), tuneforge")
    parser.add_argument("--lock", choices=["run", "none"], default="run",
                        help="take /tmp/tuneforge-heavy.lock around each side (do not also wrap this in flock)")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    parser.add_argument("--child", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    if args.child:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(SEED)
        from tuneforge.accel.allocator import loaded_allocator

        args.child_out.write_text(json.dumps({**SIDES[args.child](args), "allocator": loaded_allocator()}))
        return
    raw = sys.argv[1:] if argv is None else argv
    with open(LOCK, "w") as lock:  # held for the whole run: the sides are measured back to back
        if args.lock == "run":
            fcntl.flock(lock, fcntl.LOCK_EX)
        result = _measure(args, threads, raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    md = render_markdown(result)
    args.markdown.write_text(md)
    print(md)


def _measure(args: argparse.Namespace, threads: int, raw: list[str]) -> dict[str, Any]:
    started = dt.datetime.now(dt.timezone.utc)
    peak = matmul_peak(threads)
    peak_bf16 = matmul_peak(threads, "bfloat16")
    print(f"matmul peak: fp32 {peak['gflops']:.1f}, bf16 {peak_bf16['gflops']:.1f} GFLOP/s", flush=True)
    from transformers import AutoConfig

    _, path, train, _ = _data(args)
    flops = required_flops(AutoConfig.from_pretrained(path, local_files_only=True), train, LORA["r"])
    useful = sum(e.n_answer for e in train)
    tmp = Path(tempfile.mkdtemp(prefix="speed-"))
    sides: dict[str, Any] = {}
    runs = [(side, None, None) for side in args.sides.split(",") if side != "tuneforge"]
    if "tuneforge" in args.sides.split(","):
        micros = [int(m) for m in str(args.tf_micro or args.batch).split(",")]
        runs += [("tuneforge" if len(micros) == 1 and not args.tf_micro_tokens else f"tuneforge-micro{m}", m, None)
                 for m in micros]
        runs += [(f"tuneforge-tokens{t}", None, t) for t in args.tf_micro_tokens]
        tf = [r for r in runs if r[0].startswith("tuneforge")]
        compact = [(name + "+compact", m, t) for name, m, t in tf]
        chosen = {"no": tf, "yes": compact, "both": tf + compact}[args.tf_compact]
        before = [(name + PLAIN, m, t) for name, m, t in chosen] if args.tf_plain_too else []
        runs = [r for r in runs if not r[0].startswith("tuneforge")] + chosen + before
    for name, micro, tokens, malloc in _with_allocators(runs, args):
        print(f"== {name}", flush=True)
        s = _child(name.split("-")[0].split("+")[0].split("@")[0], micro, args, tmp / f"{name}.json", tokens,
                   name, malloc)
        s["micro_batch"] = micro
        s["useful_tokens_per_s"] = useful / s["train_seconds"]
        s["mfu"] = flops["total"] / s["train_seconds"] / (peak["gflops"] * 1e9)  # against the fp32 peak
        bf16 = s.get("precision") == "bf16" or s.get("frozen_dtype") == "bfloat16"  # most FLOPs run in bf16
        s["mfu_own_precision"] = flops["total"] / s["train_seconds"] / ((peak_bf16 if bf16 else peak)["gflops"] * 1e9)
        s["achieved_gflops"] = flops["total"] / s["train_seconds"] / 1e9
        sides[name] = s
        print(json.dumps({k: v for k, v in s.items() if k != "losses"}, indent=1), flush=True)
    peak_after = matmul_peak(threads)  # the cores are shared: did the machine change during the run?
    result = {"machine": _machine(), "command": f"OMP_NUM_THREADS={threads} python bench/speed.py {shlex.join(raw)}",
              "matmul_peak": peak, "matmul_peak_bf16": peak_bf16, "matmul_peak_after": peak_after,
              "started": started.isoformat(timespec="seconds"),
              "load_during_run": os.getloadavg(), "model": args.model, "examples": len(train), "useful_tokens": useful,
              "real_tokens": sum(len(e.input_ids) for e in train), "required_flops": flops, "sides": sides}
    if "baseline" in sides:
        b = sides["baseline"]
        result["ratios"] = {name: {"useful_tokens_per_s": t["useful_tokens_per_s"] / b["useful_tokens_per_s"],
                                   "peak_rss": t["peak_rss_mb"] / b["peak_rss_mb"],
                                   "wall": t["wall_seconds"] / b["wall_seconds"],
                                   "val_loss_delta": t["val_loss"] - b["val_loss"], "mfu": t["mfu"],
                                   "mfu_own_precision": t.get("mfu_own_precision", t["mfu"]),
                                   "precision": t.get("precision", "no"),
                                   "frozen_dtype": t.get("frozen_dtype", "float32")}
                            for name, t in sides.items() if name != "baseline"}
        others = [n for n in sides if n.startswith("baseline@")]  # the baseline with another malloc too
        result["ratios_to"] = {o: {name: {"useful_tokens_per_s":
                                              t["useful_tokens_per_s"] / sides[o]["useful_tokens_per_s"],
                                          "peak_rss": t["peak_rss_mb"] / sides[o]["peak_rss_mb"]}
                                   for name, t in sides.items() if name.startswith("tuneforge")} for o in others}
    return result


def _with_allocators(runs: list[tuple[str, Any, Any]], args: argparse.Namespace) -> list[tuple[str, Any, Any, str]]:
    """Each side once per allocator its family lists; the first keeps the plain name, others get ``@malloc``."""
    out = []
    for family, listed in (("baseline", args.baseline_allocator), ("tuneforge", args.tf_allocator)):
        for i, malloc in enumerate(listed.split(",")):
            out += [(name if i == 0 else f"{name}@{malloc}", micro, tokens, malloc)
                    for name, micro, tokens in runs if name.startswith(family)]
    return out


def _precision(s: dict[str, Any]) -> str:
    """What the side's matmuls ran in: bf16 autocast, fp32 with a bf16 frozen base, or fp32."""
    if s.get("precision") == "bf16":
        return "bf16 autocast"
    return "fp32, bf16 frozen base" if s.get("frozen_dtype") == "bfloat16" else "fp32"


def render_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = ["# Speed and memory: tuneforge against plain transformers", "",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['omp_threads']} OpenMP threads), {m['memory_gb']} GB; "
             f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}, "
             f"accelerate {m['accelerate']}; {m['date']}.", "",
             f"Command: `{r['command']}`", "",
             f"Work: {r['model']} + LoRA r16 (all linear layers) on SNIPS slot extraction, the first {r['examples']} "
             f"training rows once ({r['real_tokens']} real tokens, {r['useful_tokens']} answer tokens that carry "
             f"loss), batch 8, max_length 256, lr {LR}. fp32 matmul peak measured in this run: "
             f"{r['matmul_peak']['gflops']:.1f} GFLOP/s at the start, {r['matmul_peak_after']['gflops']:.1f} at the end"
             + (f" (bf16: {r['matmul_peak_bf16']['gflops']:.1f})" if "matmul_peak_bf16" in r else "") + "; "
             f"load average at the end {', '.join(f'{x:.1f}' for x in r['load_during_run'])}. "
             f"Required model FLOPs: {r['required_flops']['total'] / 1e12:.2f} TFLOP.", "",
             "| side | precision | malloc | train s | useful tokens/s | peak RSS MB | wall s | val loss | GFLOP/s "
             "| of fp32 matmul peak | of own-precision peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["sides"].items():
        lines.append(f"| {name} | {_precision(s)} | {s.get('allocator', 'system')} | {s['train_seconds']:.1f} | "
                     f"{s['useful_tokens_per_s']:.1f} | "
                     f"{s['peak_rss_mb']:.0f} | {s['wall_seconds']:.1f} | {s['val_loss']:.4f} | "
                     f"{s['achieved_gflops']:.1f} | "
                     f"{s['mfu']:.1%} | {s.get('mfu_own_precision', s['mfu']):.1%} |")
    lines += ["",
              "How it is measured: each side is its own subprocess, run one after the other while this script holds "
              "`/tmp/tuneforge-heavy.lock`; peak RSS is the child's `ru_maxrss` (`os.wait4`), so model loading "
              "and the validation pass count too; train s is the training call alone; useful tokens are the "
              "answer tokens (the ones that carry loss), the same for both sides; validation loss is the mean "
              "answer-token cross-entropy on the same held-out rows after training, by the same plain function. "
              "FLOP/s counts the FLOPs the work requires (body forward and input gradients on real tokens, LoRA "
              "forward and both gradients, causal attention, the vocabulary head at answer positions only), the "
              "same count for both sides, so padding, prompt-position logits and recomputation are cost, not "
              "credit (see the docstring of `bench/speed.py`). malloc: the allocator each side ran with; the "
              "tuneforge sides take what the `tuneforge` command picks (`src/tuneforge/accel/allocator.py`: tcmalloc "
              "where installed), the baseline the system's (glibc) unless `--baseline-allocator` says otherwise."]
    for name, q in r.get("ratios", {}).items():
        if name.startswith("baseline@"):
            lines += ["", f"The baseline with another malloc ({name} / baseline): useful tokens/s "
                      f"{q['useful_tokens_per_s']:.2f}x, peak RSS {q['peak_rss']:.2f}x, validation loss "
                      f"{q['val_loss_delta']:+.4f}; {q['mfu']:.1%} of the fp32 matmul peak."]
            continue
        lines += ["",
                  f"Ratios ({name} / baseline): useful tokens/s **{q['useful_tokens_per_s']:.2f}x** (target >= 1.5x), "
                  f"peak RSS **{q['peak_rss']:.2f}x** (target <= 0.4x), wall {q['wall']:.2f}x, validation loss "
                  f"{q['val_loss_delta']:+.4f} (target <= 0); {q['mfu']:.1%} of the fp32 matmul peak"
                  + (f", {q['mfu_own_precision']:.1%} of the bf16 peak" if _precision(q) != "fp32" else "")
                  + " (target >= 60%)."]
    for other, rows in r.get("ratios_to", {}).items():
        lines += ["", f"Against {other} (the same plain transformers run with that malloc): "
                  + "; ".join(f"{name}: useful tokens/s {q['useful_tokens_per_s']:.2f}x, peak RSS {q['peak_rss']:.2f}x"
                              for name, q in rows.items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
