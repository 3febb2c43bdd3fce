"""The feedback loop once, end to end: serve a model, collect feedback on its answers, train a DPO stage on that
feedback, compare it with the served model on the same test items, and promote it only if nothing regressed.

    python examples/feedback_loop.py                       # SmolLM2-135M on the E2E data (a few minutes on 2 cores)
    python examples/feedback_loop.py --model PATH --rows 40 --asks 16 --test-rows 8   # a quick run on a local model

1. SFT: a generation run on E2E meaning representations -> sentences (LoRA), scored on dev with every reference.
2. Serve it in-process (the same app as `tuneforge serve --log-requests`) and ask it about held-out training
   inputs. Here a simulated user judges each answer: when the answer drops or invents a fact of its input (the
   slot check of `tuneforge.evaluate.faithfulness`), the user sends back one of the human references as the
   answer they wanted (`POST /v1/feedback {"id", "preferred"}`); otherwise a thumbs up. In production these
   requests come from people; nothing else in the loop changes.
3. `tuneforge data feedback LOG -o pairs.jsonl` (here `feedback_from_log`) turns the log into DPO pairs.
4. DPO: a preference run from the exported SFT weights (the reference is the same network, adapter off).
5. Compare both exported models on the same dev items (greedy answers; BLEU with all references, slot error
   rate, the golden cases) and promote the DPO model only if no golden case breaks and BLEU is not worse by
   more than its paired 95% interval allows (the interval of the change must reach zero or above).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM

from tuneforge import api
from tuneforge.data.feedback import feedback_from_log
from tuneforge.evaluate.faithfulness import check_item, parse_slots, vocabulary
from tuneforge.evaluate.golden import check_answer
from tuneforge.evaluate.metrics import bleu
from tuneforge.models.loading import load_tokenizer
from tuneforge.recipe import GoldenCase
from tuneforge.serve.app import create_app
from tuneforge.serve.config import ServeConfig
from tuneforge.serve.served import ServedModel
from tuneforge.tasks.decoding import generate

E2E = Path("../shared/datasets/e2e")  # --data
INSTRUCTION = "Describe this restaurant in one sentence."
GOLDEN = [
    {"name": "names the place", "input": "name[Aromi], eatType[coffee shop], food[Italian], area[city centre]",
     "must_contain": ["Aromi", "Italian"], "must_not_contain": ["Chinese", "riverside"]},
    {"name": "keeps the price", "input": "name[The Eagle], eatType[pub], priceRange[cheap], near[Burger King]",
     "must_contain": ["The Eagle", "cheap"], "must_not_contain": ["expensive"]},
]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def split_train(rows: list[dict[str, Any]], asks: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Training rows for SFT, and ``asks`` other inputs (with their references) that users will ask about."""
    refs: dict[str, list[str]] = {}
    for r in rows:
        refs.setdefault(r["prompt"], []).append(r["completion"])
    inputs = sorted(refs)
    random.Random(seed).shuffle(inputs)
    held = set(inputs[:asks])
    return [r for r in rows if r["prompt"] not in held], {p: refs[p] for p in inputs[:asks]}


def sft(args: argparse.Namespace, train: list[dict[str, Any]]) -> Path:
    recipe = {"task": "generation", "model": args.model, "method": {"name": "lora", "r": 16, "alpha": 32},
              "prompt": {"instruction": INSTRUCTION},
              "data": {"train": str(write_jsonl(args.out / "data" / "sft.jsonl", train[: args.rows])),
                       "test": str(E2E / "dev.jsonl"), "references_field": "references",
                       "max_test_rows": args.test_rows, "split": {"validation": 0.05}},
              "train": {"epochs": 1, "lr": 1.0e-3, "batch_size": 8, "max_length": 128, "seed": 0},
              "eval": {"base": False, "max_new_tokens": 64, "batch_size": 16, "golden": GOLDEN},
              "output": str(args.out / "sft")}
    return api.train(recipe, overwrite=True).run_dir


def collect_feedback(run: Path, asks: dict[str, list[str]], log: Path) -> None:
    """Serve the run, ask about each held-out input, and judge every answer as the simulated user does."""
    vocab = vocabulary([s for s in (parse_slots(p) for p in asks) if s is not None])
    with TestClient(create_app(ServedModel.from_run(run), ServeConfig(log_requests=log))) as client:
        for prompt, refs in asks.items():
            resp = client.post("/v1/chat/completions", json={"messages": [
                {"role": "user", "content": f"{INSTRUCTION}\n\n{prompt}"}]})
            resp.raise_for_status()
            asked = resp.json()
            answer = asked["choices"][0]["message"]["content"]
            slots = parse_slots(prompt) or {}
            errors = check_item(slots, answer, vocab).errors
            body = {"id": asked["id"], "rating": "good"} if errors == 0 else \
                {"id": asked["id"], "rating": "bad", "preferred": refs[0]}
            client.post("/v1/feedback", json=body).raise_for_status()


def dpo(args: argparse.Namespace, sft_model: Path, pairs: Path) -> Path:
    recipe = {"task": "preference", "model": str(sft_model), "method": {"name": "lora", "r": 16, "alpha": 32},
              "data": {"train": str(pairs), "split": {"validation": 0.0, "test": 0.1}},
              "preference": {"loss": "dpo", "beta": 0.1},
              "train": {"epochs": 2, "lr": 5.0e-4, "batch_size": 4, "max_length": 192, "seed": 0},
              "eval": {"base": False, "max_new_tokens": 48, "judge_prompts": 0, "samples": 2},
              "output": str(args.out / "dpo")}
    return api.train(recipe, overwrite=True).run_dir


def answers(model_dir: Path, inputs: list[str]) -> list[str]:
    """Greedy answers of an exported model, through its chat template, as the generation task decodes them."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = load_tokenizer(model_dir)
    prompts = [[{"role": "user", "content": f"{INSTRUCTION}\n\n{x}"}] for x in inputs]
    return generate(model, tok, prompts, max_new_tokens=64, batch_size=16)


def scores(model_dir: Path, dev: list[dict[str, Any]]) -> dict[str, Any]:
    preds = answers(model_dir, [r["prompt"] for r in dev])
    slots = [parse_slots(r["prompt"]) or {} for r in dev]
    vocab = vocabulary(slots)
    items = [check_item(s, p, vocab) for s, p in zip(slots, preds)]
    golden = answers(model_dir, [g["input"] for g in GOLDEN])
    passed = [not check_answer(GoldenCase(**g), a) for g, a in zip(GOLDEN, golden)]
    return {"predictions": preds, "bleu": bleu([r["references"] for r in dev], preds)["score"],
            "slot_error_rate": sum(i.errors for i in items) / max(1, sum(i.slots for i in items)),
            "golden": passed}


def bleu_change_interval(dev: list[dict[str, Any]], old: list[str], new: list[str], n: int = 200) -> list[float]:
    """Paired bootstrap of the BLEU change: the same resampled items for both models."""
    rng = np.random.default_rng(0)
    refs = [r["references"] for r in dev]
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(dev), len(dev))
        diffs.append(bleu([refs[i] for i in idx], [new[i] for i in idx])["score"]
                     - bleu([refs[i] for i in idx], [old[i] for i in idx])["score"])
    return np.quantile(diffs, [0.025, 0.975]).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=600, help="SFT training rows")
    parser.add_argument("--asks", type=int, default=64, help="held-out inputs the served model is asked about")
    parser.add_argument("--test-rows", type=int, default=50, help="dev inputs both models are compared on")
    parser.add_argument("--out", type=Path, default=Path("runs/feedback-loop"))
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/e2e"), help="the E2E folder")
    args = parser.parse_args()
    global E2E
    E2E = args.data

    train, asks = split_train(read_jsonl(E2E / "train.jsonl"), args.asks, seed=0)
    sft_run = sft(args, train)
    log = args.out / "serve" / "requests.jsonl"
    log.unlink(missing_ok=True)
    collect_feedback(sft_run, asks, log)
    pairs = feedback_from_log(log, args.out / "data" / "feedback_pairs.jsonl")
    print(f"feedback: {pairs.feedback} answers judged, {len(pairs.rows)} DPO pairs")
    sft_model = api.export(sft_run, args.out / "exported" / "sft", overwrite=True, force=True)
    dpo_model = api.export(dpo(args, sft_model, args.out / "data" / "feedback_pairs.jsonl"),
                           args.out / "exported" / "dpo", overwrite=True, force=True)

    dev = read_jsonl(E2E / "dev.jsonl")[: args.test_rows]
    old, new = scores(sft_model, dev), scores(dpo_model, dev)
    lo, hi = bleu_change_interval(dev, old["predictions"], new["predictions"])
    broken = [g["name"] for g, o, n in zip(GOLDEN, old["golden"], new["golden"]) if o and not n]
    promote = not broken and hi >= 0
    decision = {"previous": {k: old[k] for k in ("bleu", "slot_error_rate", "golden")},
                "candidate": {k: new[k] for k in ("bleu", "slot_error_rate", "golden")},
                "bleu_change_ci": [lo, hi], "golden_broken": broken, "promoted": promote,
                "serving": str(dpo_model if promote else sft_model)}
    (args.out / "promotion.json").write_text(json.dumps(decision, indent=2), encoding="utf-8")
    print(json.dumps(decision, indent=2))


if __name__ == "__main__":
    main()
