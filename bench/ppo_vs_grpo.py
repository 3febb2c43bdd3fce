"""PPO against GRPO at an equal number of sampled answers, on the product-listing JSON reward.

    flock /tmp/tuneforge-heavy.lock python bench/ppo_vs_grpo.py --rollouts 8

Both start from the same short SFT stage of ``examples/products-grpo.yaml`` (its stage 1, run once) and
train the same LoRA with the same prompts, ``group_size`` and batch: GRPO takes one optimizer step per
sample batch; PPO reuses each sample batch for ``ppo_epochs x ppo_minibatches`` clipped steps, so it gets
that many times the steps for the same ``--rollouts`` sample batches (the same sampled answers). The
curve is the mean ``json_valid`` reward of each sample batch against the answers sampled so far, from the
runs' ``metrics.jsonl``; the table adds the tuned policy's greedy reward on the held-out listings and the
training time. Results go to ``bench/results/ppo-vs-grpo.json`` and a section of
``bench/PREFERENCE_RESULTS.md`` (between ``<!-- ppo-vs-grpo -->`` markers, replaced on each run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- ppo-vs-grpo -->"


def machine() -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from generation import machine as describe

    return describe()


def stage(base: dict[str, Any], index: int, output: Path, model: str | None = None, **changes: Any) -> Any:
    """Stage ``index`` of the example as a whole recipe (the top level merged in), with ``changes`` merged into it."""
    from tuneforge.recipe import composed_recipe

    raw = json.loads(json.dumps(base))
    for key, value in changes.items():
        raw["stages"][index][key] = {**raw["stages"][index].get(key, {}), **value}
    recipe = composed_recipe(raw, index, base_dir=ROOT, model=model)
    recipe.output = output
    return recipe


def sft(base: dict[str, Any], out: Path) -> Path:
    from tuneforge import api

    result = api.train(stage(base, 0, out / "sft"), overwrite=True, echo=lambda *_: None)
    return api.export(result.run_dir, out / "sft-merged", overwrite=True, force=True)


def rl(base: dict[str, Any], model: Path, out: Path, algorithm: str, rollouts: int, epochs: int,
       minibatches: int, test_rows: int) -> dict[str, Any]:
    from tuneforge import api

    per_rollout = epochs * minibatches if algorithm == "ppo" else 1
    recipe = stage(base, 1, out / algorithm, model=str(model),
                   rl={"algorithm": algorithm, "ppo_epochs": epochs, "ppo_minibatches": minibatches},
                   train={"max_steps": rollouts * per_rollout}, data={"max_test_rows": test_rows})
    start = time.perf_counter()
    result = api.train(recipe, overwrite=True, echo=lambda *_: None)
    seconds = time.perf_counter() - start
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    batch = recipe.train.batch_size * recipe.rl.group_size
    curve = [r["reward"] for r in log if "reward" in r and "step" in r and r.get("event") is None]
    report = result.report or {}
    return {"algorithm": algorithm, "optimizer_steps": recipe.train.max_steps, "answers_per_rollout": batch,
            "curve": [{"answers": (i + 1) * batch, "reward": r} for i, r in enumerate(curve)],
            "train_seconds": report.get("training", {}).get("seconds"), "wall_seconds": seconds,
            "greedy_reward": {k: report.get(k, {}).get("reward") for k in ("base", "tuned")},
            "greedy_json_valid": {k: report.get(k, {}).get("json_valid") for k in ("base", "tuned")}}


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    md = [MARK, "## PPO vs GRPO at equal sampled answers (product listings, json_valid reward)", "",
          f"- command: `{result['command']}`", f"- machine: {result['machine']}; {result['date']}",
          f"- both from the same 3-step SFT stage of `examples/products-grpo.yaml`; {result['rollouts']} sample "
          f"batches of {runs[0]['answers_per_rollout']} answers each; PPO: {result['ppo_epochs']} epochs x "
          f"{result['ppo_minibatches']} minibatches per batch", "",
          "| algorithm | optimizer steps | train s | greedy reward base -> tuned | greedy json_valid base -> tuned |",
          "|---|---|---|---|---|"]
    for r in runs:
        g, j = r["greedy_reward"], r["greedy_json_valid"]
        md.append(f"| {r['algorithm']} | {r['optimizer_steps']} | {r['train_seconds']:.0f} | "
                  f"{g['base']:.3f} -> {g['tuned']:.3f} | {j['base']:.3f} -> {j['tuned']:.3f} |")
    md += ["", "Mean sampled reward of each batch (the curve):", "",
           "| answers sampled | " + " | ".join(r["algorithm"] for r in runs) + " |",
           "|---|" + "---|" * len(runs)]
    for i in range(max(len(r["curve"]) for r in runs)):
        cells = [f"{r['curve'][i]['reward']:.3f}" if i < len(r["curve"]) else "-" for r in runs]
        md.append(f"| {(i + 1) * runs[0]['answers_per_rollout']} | " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n" + MARK + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=8, help="sample batches for each algorithm")
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--ppo-minibatches", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-ppo-vs-grpo"))
    parser.add_argument("--test-rows", type=int, default=32, help="held-out listings the greedy reward is read on")
    parser.add_argument("--model", default=None, help="another base model (a smoke test on a tiny local one)")
    parser.add_argument("--no-write", action="store_true", help="print only: leave bench/ untouched")
    args = parser.parse_args()
    base = yaml.safe_load((ROOT / "examples" / "products-grpo.yaml").read_text(encoding="utf-8"))
    if args.model:
        base["model"] = args.model
        for entry in base["stages"]:
            entry["train"]["max_length"] = 96
        base["stages"][1]["rl"]["max_new_tokens"] = 8
        base["eval"]["max_new_tokens"] = 8
    model = sft(base, args.out)
    runs = [rl(base, model, args.out, a, args.rollouts, args.ppo_epochs, args.ppo_minibatches, args.test_rows)
            for a in ("grpo", "ppo")]
    result = {"command": "python " + " ".join(sys.argv), "machine": machine(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rollouts": args.rollouts,
              "ppo_epochs": args.ppo_epochs, "ppo_minibatches": args.ppo_minibatches, "runs": runs}
    if args.no_write:
        print(markdown(result))
        return
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "ppo-vs-grpo.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    target = ROOT / "bench" / "PREFERENCE_RESULTS.md"
    text = target.read_text(encoding="utf-8") if target.is_file() else ""
    if MARK in text:
        head, _, rest = text.partition(MARK)
        text = head + rest.partition(MARK)[2].lstrip("\n")
    target.write_text(text.rstrip("\n") + "\n\n" + markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
