"""Preference tuning on tiny in-process models: data formats, DPO family, reward models, RL, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import COLOURS, write_jsonl
from tuneforge.data.feedback import hh_to_messages
from tuneforge.data.readers import Record
from tuneforge.errors import ConfigError, DataError
from tuneforge.recipe import recipe_from_dict, recipe_to_yaml

GOOD = ["lovely", "great", "superb", "fine"]
BAD = ["awful", "broken", "poor", "ugly"]


def pair_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Separable toy preferences: the chosen answer praises, the rejected one complains."""
    rows = []
    for i in range(offset, offset + n):
        colour = COLOURS[i % 4]
        rows.append({"prompt": f"What do you think of the {colour} lamp {i}?",
                     "chosen": f"The {colour} lamp is {GOOD[i % 4]}.",
                     "rejected": f"The {colour} lamp is {BAD[(i + 1) % 4]}."})
    return rows


def pref_recipe(model: Path, task: str, data: Path, out: Path, method: dict[str, Any] | None = None,
                **sections: Any) -> dict[str, Any]:
    recipe = {"task": task, "model": str(model),
              "method": method or {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
              "data": {"train": str(data), "split": {"validation": 0.0, "test": 0.25}},
              "train": {"epochs": 3, "lr": 5e-3, "batch_size": 4, "seed": 0, "max_length": 64, "warmup_steps": 0},
              "eval": {"max_new_tokens": 8, "batch_size": 8, "judge_prompts": 4, "samples": 2}, "output": str(out)}
    recipe.update(sections)
    return recipe


# ----------------------------------------------------------------------------- data
def _parse(task_name: str, rows: list[dict[str, Any]], tiny_decoder: Path, tmp_path: Path,
           **sections: Any) -> list[Any]:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks import get_task

    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    recipe = recipe_from_dict(pref_recipe(tiny_decoder, task_name, path, tmp_path / "out", **sections))
    task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
    records = [Record(str(path), i + 1, r) for i, r in enumerate(rows)]
    return task.parse(records, "the train data")


def test_hh_transcript_becomes_chat_messages() -> None:
    msgs = hh_to_messages("\n\nHuman: How do I bake?\n\nAssistant: With flour.\n\nHuman: And then?\n\nAssistant:")
    assert msgs == [{"role": "user", "content": "How do I bake?"}, {"role": "assistant", "content": "With flour."},
                    {"role": "user", "content": "And then?"}]


def test_every_format_parses(tiny_decoder: Path, tmp_path: Path) -> None:
    rows = [
        {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away."},
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}],
         "rejected": [{"role": "assistant", "content": "No"}]},
        {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No"}]},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: No"},
        {"prompt": "Rank", "responses": ["a", "b", "c"]},
        {"prompt": "Rank", "responses": ["low", "high", "mid"], "scores": [1, 3, 2]},
        {"prompt": "Judge", "completion": "fine", "label": "good"},
        {"prompt": "Judge", "completion": "bad", "label": False},
    ]
    examples = _parse("preference", rows, tiny_decoder, tmp_path, preference={"loss": "kto"})
    assert [e.target.kind for e in examples] == ["pair"] * 4 + ["ranking"] * 2 + ["binary"] * 2
    for e in examples[:4]:
        assert e.target.messages[-1] == {"role": "user", "content": "Hi"}
        assert e.target.responses[1] in ("Go away.", "No")
    assert examples[5].target.responses == ["high", "mid", "low"]
    assert examples[4].target.pairs() == [("a", "b"), ("a", "c"), ("b", "c")]
    assert [e.target.label for e in examples[6:]] == [True, False]


def test_bad_rows_are_listed_with_file_and_line(tiny_decoder: Path, tmp_path: Path) -> None:
    rows = [
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"prompt": 3, "chosen": "a", "rejected": "b"},
        {"prompt": "x", "chosen": "a"},
        {"prompt": "x", "responses": ["a", "b"], "scores": [1]},
        {"prompt": "x", "completion": "a", "label": "maybe"},
        {"text": "nothing"},
    ]
    with pytest.raises(DataError) as err:
        _parse("preference", rows, tiny_decoder, tmp_path)
    lines = [p.split(":")[1] for p in err.value.problems]
    assert lines == ["2", "3", "4", "5", "6", "7"]
    assert "identical" in err.value.problems[0] and "scores" in err.value.problems[3]


def test_binary_feedback_needs_kto(tiny_decoder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="kto"):
        _parse("preference", [{"prompt": "x", "completion": "a", "label": "good"}], tiny_decoder, tmp_path)


# ----------------------------------------------------------------------------- recipe
def test_sections_round_trip_and_belong_to_their_task(tiny_decoder: Path, tmp_path: Path) -> None:
    import yaml

    path = write_jsonl(tmp_path / "p.jsonl", pair_rows(4))
    raw = pref_recipe(tiny_decoder, "preference", path, tmp_path / "o", preference={"loss": "ipo", "beta": 0.2})
    recipe = recipe_from_dict(raw)
    again = recipe_from_dict(yaml.safe_load(recipe_to_yaml(recipe)))
    assert again.preference == recipe.preference and again.preference.loss == "ipo"
    with pytest.raises(ConfigError, match="reward section applies to task reward_model"):
        recipe_from_dict({**raw, "reward": {"rankings": "pairs"}})
    with pytest.raises(ConfigError, match="preference.los"):
        recipe_from_dict({**raw, "preference": {"los": "dpo"}})


def test_reference_losses_refuse_a_method_without_adapter(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge import api

    path = write_jsonl(tmp_path / "p.jsonl", pair_rows(8))
    with pytest.raises(ConfigError, match="simpo or orpo"):
        api.train(pref_recipe(tiny_decoder, "preference", path, tmp_path / "o", method={"name": "full"}),
                  echo=lambda *a: None)


# ----------------------------------------------------------------------------- DPO
def _lora_base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_dpo_separates_toy_preferences_and_keeps_the_reference(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge import api

    path = write_jsonl(tmp_path / "p.jsonl", pair_rows(48))
    result = api.train(pref_recipe(tiny_decoder, "preference", path, tmp_path / "dpo",
                                   preference={"loss": "dpo", "beta": 0.5}), echo=lambda *a: None)
    report = result.report
    assert report["tuned"]["pair_accuracy"] >= 0.9
    assert report["base"]["pair_accuracy"] == 0.5  # at the start policy == reference: every implicit reward is 0
    assert report["tuned"]["reward_margin"] > 0 and report["tuned"]["kl_to_reference"] > 0
    assert report["intervals"]["pair_accuracy"]["tuned"][0] > 0.5
    assert len(report["tuned"]["side_by_side"]) == 2
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "reward_accuracy" in r]
    assert steps and "reward_margin" in steps[0]


def test_reference_is_bit_identical_after_dpo_training(tiny_decoder: Path, tmp_path: Path) -> None:
    """The base weights never change, and the adapter-off log-probabilities equal the untouched model's."""
    from tuneforge import api
    from tuneforge.tasks.answers import adapter_off, causal_view, sequence_logps

    path = write_jsonl(tmp_path / "p.jsonl", pair_rows(16))
    result = api.train(pref_recipe(tiny_decoder, "preference", path, tmp_path / "dpo", train={
        "epochs": 1, "lr": 1e-2, "batch_size": 4, "seed": 0, "max_length": 64}), echo=lambda *a: None)
    tuned = api.load_run(result.run_dir)
    base = api.load_run(result.run_dir, tuned=False)
    task = tuned.task
    batch = task.collate(task.encode_many(task.parse([Record("x", 1, pair_rows(1)[0])], "x")))
    with adapter_off(tuned.model):
        ref, _ = sequence_logps(tuned.model, causal_view(batch))
    untouched, _ = sequence_logps(base.model, causal_view(batch))
    assert torch.equal(ref, untouched)
    policy, _ = sequence_logps(tuned.model, causal_view(batch))
    assert not torch.equal(policy, ref)  # the adapter did train
    assert all(torch.equal(p, q) for p, q in zip(_lora_base_state(tuned.model).values(),
                                                   _lora_base_state(base.model).values()))
    scored = api.predict(result.run_dir, write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": "What do you think of the red lamp 1?", "completion": "The red lamp is lovely."}]))
    assert isinstance(json.loads(scored.read_text())["prediction"], float)  # the implicit reward
    again = api.evaluate(result.run_dir, echo=lambda *a: None)  # `tuneforge eval` re-scores the saved test split
    assert again["tuned"]["pair_accuracy"] == result.report["tuned"]["pair_accuracy"]


@pytest.mark.parametrize("loss", ["ipo", "simpo", "orpo", "kto"])
def test_every_variant_trains_toward_the_chosen_answers(loss: str, tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge import api

    path = write_jsonl(tmp_path / "p.jsonl", pair_rows(32))
    beta = {"ipo": 0.5, "simpo": 2.0, "orpo": 0.5, "kto": 0.5}[loss]
    result = api.train(pref_recipe(tiny_decoder, "preference", path, tmp_path / loss,
                                   preference={"loss": loss, "beta": beta}), echo=lambda *a: None)
    assert result.report["tuned"]["pair_accuracy"] >= 0.75, result.report["tuned"]


# ----------------------------------------------------------------------------- reward models
@pytest.mark.parametrize("model", ["tiny_decoder", "tiny_encoder"])
def test_reward_model_separates_toy_preferences(model: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from tuneforge import api

    path = write_jsonl(tmp_path / "p.jsonl", pair_rows(48))
    result = api.train(pref_recipe(request.getfixturevalue(model), "reward_model", path, tmp_path / "rm",
                                   method={"name": "full"}), echo=lambda *a: None)
    assert result.report["tuned"]["pair_accuracy"] >= 0.9
    assert result.report["tuned"]["reward_margin"] > 0
    scored = api.predict(result.run_dir, write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": "What do you think of the red lamp 1?", "completion": "The red lamp is lovely."},
        {"prompt": "What do you think of the red lamp 1?", "completion": "The red lamp is awful."}]))
    rewards = [json.loads(line)["prediction"] for line in scored.read_text().splitlines()]
    assert rewards[0] > rewards[1]


def test_reward_model_learns_rankings_listwise(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge import api

    rows = [{"prompt": r["prompt"],
             "responses": [r["chosen"], r["chosen"].split(" is ")[0] + " is a lamp.", r["rejected"]]}
            for r in pair_rows(40)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    result = api.train(pref_recipe(tiny_decoder, "reward_model", path, tmp_path / "pl", method={"name": "full"},
                                   reward={"rankings": "plackett_luce"}), echo=lambda *a: None)
    assert result.report["tuned"]["pair_accuracy"] >= 0.75


# ----------------------------------------------------------------------------- RL
def test_advantages_and_policy_gradient_sign_by_hand() -> None:
    from tuneforge.tasks.rl import grpo_advantages, k3_kl, policy_gradient_loss, rloo_advantages

    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert grpo_advantages(rewards).tolist()[0] == pytest.approx([0.8660, -0.8660, -0.8660, 0.8660], abs=1e-3)
    assert rloo_advantages(rewards).tolist()[0] == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)  # tokens of sequence 0, 0, 1
    loss = policy_gradient_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.tensor([0, 0, 1]), 2, beta=0.1)
    loss.sum().backward()
    assert logp.grad.tolist() == pytest.approx([-0.5, -0.5, 1.0])  # descent raises seq 0 (A > 0), lowers seq 1
    assert float(k3_kl(torch.tensor(-1.0), torch.tensor(-1.0))) == 0.0
    assert float(k3_kl(torch.tensor(-1.0), torch.tensor(-2.0))) == pytest.approx(math.exp(-1) + 1 - 1)


def _short(completions: list[str], examples: list[Any], task: Any) -> list[float]:
    """A trivially learnable reward: shorter answers are better."""
    return [-len(c) / 20 for c in completions]


def test_rl_logs_reward_kl_length_and_improves_a_learnable_reward(tiny_decoder: Path, tmp_path: Path) -> None:
    from conftest import product_rows
    from tuneforge import api
    from tuneforge.tasks.rewards import REWARDS

    if "test_short" not in REWARDS:
        REWARDS.register("test_short")(_short)
    path = write_jsonl(tmp_path / "x.jsonl", product_rows(24))
    recipe = pref_recipe(tiny_decoder, "rl", path, tmp_path / "rl",
                         rl={"task": "extraction", "reward": "test_short", "group_size": 4, "beta": 0.05,
                             "max_new_tokens": 12})
    recipe["train"] = {"max_steps": 30, "lr": 2e-2, "batch_size": 4, "seed": 0, "max_length": 96, "warmup_steps": 0}
    result = api.train(recipe, echo=lambda *a: None)
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "reward" in r and "step" in r and r.get("event") is None]
    assert len(steps) == 30 and all({"kl", "response_length", "reward"} <= set(s) for s in steps)
    first = sum(s["reward"] for s in steps[:5]) / 5
    last = sum(s["reward"] for s in steps[-5:]) / 5
    assert last > first, (first, last)
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first step samples from the reference itself
    report = result.report
    assert {"reward", "json_valid"} <= set(report["tuned"]) and "reward" in report["intervals"]


def test_dpo_win_rate_is_judged_by_another_runs_reward_model(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge import api

    judge = api.train(pref_recipe(tiny_decoder, "reward_model", write_jsonl(tmp_path / "a.jsonl", pair_rows(32)),
                                  tmp_path / "judge"), echo=lambda *a: None)  # LoRA on a decoder with a scalar head
    assert judge.report["tuned"]["pair_accuracy"] >= 0.75
    recipe = pref_recipe(tiny_decoder, "preference", write_jsonl(tmp_path / "b.jsonl", pair_rows(32, offset=100)),
                         tmp_path / "dpo", preference={"loss": "dpo", "beta": 0.5})
    recipe["eval"]["judge"] = str(judge.run_dir)
    report = api.train(recipe, echo=lambda *a: None).report
    tuned = report["tuned"]
    assert 0.0 <= tuned["win_rate"] <= 1.0 and "judge_reward_tuned" in tuned and "win_rate" in report["intervals"]
    assert all("judge" in row for row in tuned["side_by_side"])
    assert "Generations side by side" in (tmp_path / "dpo" / "report.md").read_text()


def test_rl_stage_starts_from_a_supervised_stage(tiny_decoder: Path, tmp_path: Path) -> None:
    from conftest import product_rows
    from tuneforge import api

    path = write_jsonl(tmp_path / "x.jsonl", product_rows(16))
    recipe = {"model": str(tiny_decoder), "data": {"train": str(path), "split": {"validation": 0.0, "test": 0.25}},
              "eval": {"max_new_tokens": 8, "batch_size": 8}, "output": str(tmp_path / "staged"),
              "stages": [{"name": "sft", "task": "extraction", "method": {"name": "lora", "r": 4, "alpha": 8},
                          "train": {"max_steps": 2, "batch_size": 4, "max_length": 96}},
                         {"name": "grpo", "task": "rl", "method": {"name": "lora", "r": 4, "alpha": 8},
                          "rl": {"reward": "json_valid", "group_size": 2, "max_new_tokens": 8},
                          "train": {"max_steps": 2, "batch_size": 2, "max_length": 96}}]}
    api.train(recipe, echo=lambda *a: None)
    report = json.loads((tmp_path / "staged" / "stages" / "02-grpo" / "report.json").read_text())
    assert report["task"] == "rl" and {"reward", "json_valid"} <= set(report["base"])


def test_kto_trains_on_binary_feedback(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge import api

    rows = [{"prompt": r["prompt"], "completion": r["chosen"] if i % 2 else r["rejected"], "label": bool(i % 2)}
            for i, r in enumerate(pair_rows(48))]
    path = write_jsonl(tmp_path / "b.jsonl", rows)
    recipe = pref_recipe(tiny_decoder, "preference", path, tmp_path / "kto", preference={"loss": "kto", "beta": 0.5})
    recipe["data"]["test"] = str(write_jsonl(tmp_path / "t.jsonl", pair_rows(12, offset=200)))
    result = api.train(recipe, echo=lambda *a: None)
    assert result.report["tuned"]["pair_accuracy"] >= 0.75  # judged on held-out pairs


def test_reward_model_trains_rankings_as_implied_pairs(tiny_decoder: Path, tmp_path: Path) -> None:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks import get_task

    rows = [{"prompt": "x", "responses": ["a", "b", "c"]}]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    recipe = recipe_from_dict(pref_recipe(tiny_decoder, "reward_model", path, tmp_path / "o"))
    task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
    groups = task.encode_many(task.parse([Record(str(path), 1, rows[0])], "x"))
    assert len(groups) == 3 and all(len(g.sequences) == 2 for g in groups)
    listwise = get_task(recipe_from_dict({**pref_recipe(tiny_decoder, "reward_model", path, tmp_path / "o"),
                                          "reward": {"rankings": "plackett_luce"}}), load_tokenizer(tiny_decoder),
                        "decoder")
    assert [len(g.sequences) for g in listwise.encode_many(listwise.parse([Record(str(path), 1, rows[0])], "x"))] == [3]


def test_long_prompts_lose_their_oldest_turns_first(tiny_decoder: Path) -> None:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks.answers import encode_answers, fit_messages

    tok = load_tokenizer(tiny_decoder)
    msgs = hh_to_messages("".join(f"\n\nHuman: question number {i} about lamps\n\nAssistant: answer {i}"
                                  for i in range(8))
                          + "\n\nHuman: the last question?\n\nAssistant:")
    kept = fit_messages(tok, msgs, 60)
    assert kept[-1]["content"] == "the last question?" and len(kept) < len(msgs) and kept[0]["role"] == "user"
    chosen, rejected = encode_answers(tok, msgs, ["short", "a much longer answer than the other one"], 64)
    n_prompt = [sum(1 for x in e.labels if x == -100) for e in (chosen, rejected)]
    assert n_prompt[0] == n_prompt[1] and chosen.truncated and max(len(chosen.input_ids), len(rejected.input_ids)) <= 64


def test_shared_prompt_forward_equals_one_sequence_per_answer(tiny_decoder: Path) -> None:
    """Running each pair's prompt once (answers packed after it) changes no log-probability or gradient."""
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.resolve import resolve_model
    from tuneforge.tasks.answers import (
        Group, causal_view, collate_groups, encode_answers, packed_group_token_logps, token_logps,
    )

    tok = load_tokenizer(tiny_decoder)
    model = get_peft_model(load_model(resolve_model(str(tiny_decoder)), head="causal_lm"),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    groups = [Group.of(encode_answers(tok, [{"role": "user", "content": "lamp " * k}],
                                      ["yes " * (k + 1), "no", "maybe " * (5 - k)][: 2 + k % 2], 64))
              for k in range(1, 5)]  # prompts, answers and group sizes of different lengths: padding everywhere
    batch = collate_groups(groups, 0)
    grads = []
    for fn in (lambda: token_logps(model, causal_view(batch)), lambda: packed_group_token_logps(model, batch)):
        model.zero_grad()
        picked, rows, _ = fn()
        picked.sum().backward()
        grads.append((picked.detach(), rows, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (a, ra, ga), (b, rb, gb) = grads
    assert torch.equal(ra, rb) and torch.allclose(a, b, atol=1e-5)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ga, gb))


@pytest.mark.parametrize("task_name", ["preference", "rl"])
def test_a_second_run_encodes_again_instead_of_reading_a_lossy_cache(task_name: str, tiny_decoder: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON cache keeps ids and labels only: answer groups and RL prompt indices must not come from it."""
    from conftest import product_rows
    from tuneforge.tasks.encode_cache import cache_dir, encode_cached
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks import get_task

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    rows = pair_rows(4) if task_name == "preference" else product_rows(4)
    extra = {} if task_name == "preference" else {"rl": {"task": "extraction", "reward": "json_valid"}}
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    for _ in range(2):  # two runs: two fresh tasks over the same data
        recipe = recipe_from_dict(pref_recipe(tiny_decoder, task_name, path, tmp_path / "out", **extra))
        task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
        examples = task.parse([Record(str(path), i + 1, r) for i, r in enumerate(rows)], "the train data")
        task.fit_schema(examples)
        encoded, hit = encode_cached(task, examples)
        assert not hit
        task.collate(encoded)  # usable: groups keep their answers, RL indices point at recorded prompts
    assert not cache_dir().exists() or not list(cache_dir().glob("*.json"))
