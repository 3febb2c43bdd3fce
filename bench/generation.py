"""Data-to-text generation on E2E, measured with every reference: base, few-shot, LoRA and full fine-tuning.

    flock /tmp/tuneforge-heavy.lock python bench/generation.py --out /tmp/gen-bench               # all four
    flock /tmp/tuneforge-heavy.lock python bench/generation.py --only lora --rows 1500 --epochs 1

Every system answers the same ``../shared/datasets/e2e/dev.jsonl`` inputs (100 meaning representations, each
with all its human references) greedily, and every answer is scored the same way: corpus BLEU against all
references (sacrebleu), ROUGE-L and METEOR against the best reference, chrF with all references, and the slot
error rate of ``tuneforge.evaluate.faithfulness`` (input values omitted or invented).

- ``base``: SmolLM2-135M-Instruct, the instruction and the input, nothing else;
- ``fewshot``: the same with ``--shots`` training examples as earlier chat turns (fixed, seeded);
- ``lora`` / ``full``: ``tuneforge train`` (generation, ``data.references_field: references``) on ``--rows``
  rows drawn (seeded) from ``e2e/train.jsonl``, whose inputs never occur in dev.

Each system writes ``bench/results/generation-<name>.json`` (scores, seconds, the command and machine), and
``bench/GENERATION_RESULTS.md`` is rewritten from every results file present. Hold the heavy lock around it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
E2E = ROOT.parent / "shared" / "datasets" / "e2e"
MODEL = "smollm2-135m-instruct"
SYSTEM = "You write restaurant descriptions."
INSTRUCTION = "Write one sentence about this restaurant that states each of its attributes."
METRICS = ("bleu", "rouge_l", "meteor", "chrf", "slot_error_rate")
NOTES = "<!-- notes: written by hand, kept when the table is rewritten -->"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    import torch

    return f"{name}, {torch.get_num_threads()} torch threads"


def score(dev: list[dict[str, Any]], preds: list[str]) -> dict[str, float]:
    """The five figures, every one from tuneforge's registered metrics and faithfulness check."""
    from tuneforge.evaluate.faithfulness import faithfulness, parse_slots
    from tuneforge.evaluate.metrics import bleu, chrf, rouge_l
    from tuneforge.evaluate.metrics_text import meteor

    refs = [r["references"] for r in dev]
    slots = [parse_slots(r["prompt"]) or {} for r in dev]
    return {"bleu": bleu(refs, preds)["score"] / 100, "rouge_l": rouge_l(refs, preds),
            "meteor": meteor(refs, preds)["score"], "chrf": chrf(refs, preds)["score"] / 100,
            "slot_error_rate": faithfulness(slots, preds)["slot_error_rate"]}


def user_turn(mr: str) -> str:
    return f"{INSTRUCTION}\n\n{mr}"


def prompting(dev: list[dict[str, Any]], train: list[dict[str, Any]], shots: int, seed: int) -> tuple[list[str], float]:
    """Greedy answers of the untouched base model, with ``shots`` training examples as earlier turns."""
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.resolve import resolve_model
    from tuneforge.tasks.decoding import generate

    resolved = resolve_model(MODEL)
    model, tok = load_model(resolved, head="causal_lm").eval(), load_tokenizer(resolved.path)
    rng = random.Random(seed)
    examples = rng.sample(train, shots) if shots else []
    context = [{"role": "system", "content": SYSTEM}]
    for ex in examples:
        context += [{"role": "user", "content": user_turn(ex["prompt"])},
                    {"role": "assistant", "content": ex["completion"]}]
    prompts = [context + [{"role": "user", "content": user_turn(r["prompt"])}] for r in dev]
    start = time.perf_counter()
    preds = generate(model, tok, prompts, max_new_tokens=64, batch_size=16)
    return preds, time.perf_counter() - start


def fine_tune(method: dict[str, Any], lr: float, args: argparse.Namespace, train: list[dict[str, Any]],
              name: str) -> tuple[list[str], dict[str, Any]]:
    from tuneforge import api

    rows = random.Random(args.seed).sample(train, min(args.rows, len(train)))
    data = args.out / "data" / f"e2e_train_{len(rows)}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = {"task": "generation", "model": MODEL, "method": method,
              "prompt": {"system": SYSTEM, "instruction": INSTRUCTION},
              "data": {"train": str(data), "test": str(args.data / "dev.jsonl"), "references_field": "references",
                       "max_test_rows": args.test_rows, "split": {"validation": 0.0}, "cache": False},
              "train": {"epochs": args.epochs, "lr": lr, "batch_size": 8, "max_length": 160, "seed": args.seed,
                        "warmup_fraction": 0.05, "scheduler": "linear"},
              "eval": {"base": False, "max_new_tokens": 64, "batch_size": 16, "metrics": ["meteor", "chrf"]},
              "output": str(args.out / name)}
    start = time.perf_counter()
    result = api.train(recipe, overwrite=True, echo=lambda *_: None)
    total = time.perf_counter() - start
    report = result.report or {}
    preds = [json.loads(line)["prediction"] for line in (result.run_dir / "predictions" / "tuned.jsonl")
             .read_text(encoding="utf-8").splitlines() if line.strip()]
    training = report.get("training", {}).get("seconds", 0.0)
    return preds, {"rows": len(rows), "epochs": args.epochs, "lr": lr, "method": method,
                   "train_seconds": training, "other_seconds": total - training,
                   "report": {m: report["tuned"].get(m) for m in ("bleu", "rouge_l", "meteor", "chrf",
                                                                  "slot_error_rate", "references_per_item")}}


def run_one(name: str, args: argparse.Namespace, dev: list[dict[str, Any]], train: list[dict[str, Any]]) -> None:
    if name in ("base", "fewshot"):
        preds, seconds = prompting(dev, train, 0 if name == "base" else args.shots, args.seed)
        extra: dict[str, Any] = {"shots": 0 if name == "base" else args.shots, "generate_seconds": seconds}
    else:
        method = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0} if name == "lora" else {"name": "full"}
        preds, extra = fine_tune(method, args.lora_lr if name == "lora" else args.full_lr, args, train, name)
    result = {"system": name, "n_dev": len(dev), "scores": score(dev, preds), **extra,
              "command": "python " + " ".join(sys.argv), "machine": machine(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "samples": [{"input": r["prompt"], "output": p} for r, p in list(zip(dev, preds))[:3]]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"generation-{name}{args.tag}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(name, json.dumps(result["scores"]), flush=True)


def write_markdown() -> None:
    order = {"base": 0, "fewshot": 1, "lora": 2, "full": 3}
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in RESULTS.glob("generation-*.json")]
    rows.sort(key=lambda r: (order.get(r["system"], 9), r.get("rows", 0)))
    md = ["# Generation on E2E (data-to-text), scored with every reference", "",
          "Written by `bench/generation.py` from `bench/results/generation-*.json`. Dev set: "
          "`../shared/datasets/e2e/dev.jsonl` (inputs never seen in training), greedy decoding, at most 64 new "
          "tokens. BLEU and chrF use all references of an input (sacrebleu, shown on a 0-1 scale); ROUGE-L and "
          "METEOR the best reference; the slot error rate counts input values omitted or invented (lexical "
          "matching: paraphrases such as 'family-friendly' for familyFriendly[yes] are not checked, see "
          "`tuneforge.evaluate.faithfulness`).", "",
          "| system | BLEU | ROUGE-L | METEOR | chrF | slot error rate | training rows | train s | generate/eval s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["scores"]
        train_s = f"{r['train_seconds']:.0f}" if "train_seconds" in r else "-"
        other = r.get("generate_seconds", r.get("other_seconds", 0.0))
        md.append(f"| {r['system']}{' (' + str(r['shots']) + ' shots)' if r.get('shots') else ''} | {s['bleu']:.4f} | "
                  f"{s['rouge_l']:.4f} | {s['meteor']:.4f} | {s['chrf']:.4f} | {s['slot_error_rate']:.4f} | "
                  f"{r.get('rows', '-')} | {train_s} | {other:.0f} |")
    md += ["", "Commands and machines:", ""]
    md += [f"- {r['system']}: `{r['command']}` on {r['machine']} ({r['date']})" for r in rows]
    target = ROOT / "bench" / "GENERATION_RESULTS.md"
    notes = target.read_text(encoding="utf-8").partition(NOTES)[2] if target.is_file() else ""
    target.write_text("\n".join(md) + "\n\n" + NOTES + notes.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="base,fewshot,lora,full")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-generation-bench"))
    parser.add_argument("--rows", type=int, default=1000, help="training rows for lora and full")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lora-lr", type=float, default=1.0e-3)
    parser.add_argument("--full-lr", type=float, default=5.0e-5)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--test-rows", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of the results file (e.g. -2500 for a second lora size)")
    parser.add_argument("--data", type=Path, default=E2E, help="the E2E folder (default ../shared/datasets/e2e)")
    args = parser.parse_args()
    dev = read_jsonl(args.data / "dev.jsonl")[: args.test_rows]
    train = read_jsonl(args.data / "train.jsonl")
    for name in [n for n in args.only.split(",") if n]:
        run_one(name, args, dev, train)
        write_markdown()


if __name__ == "__main__":
    main()
