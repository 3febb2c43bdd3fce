"""Decoder formatting and the answer-only loss on a tiny model; batching of the loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import TrainConfig
from tuneforge.tasks.base import IGNORE, answer_logits, causal_loss_sum, collate_causal, encode_prompt_answer
from tuneforge.train.loop import epoch_batches, micro_batches

MESSAGES = [{"role": "user", "content": "what colour is the sky"}]


def test_answer_is_masked_in_and_ends_with_end_of_turn(tiny_decoder: Path) -> None:
    tok = load_tokenizer(tiny_decoder)
    enc = encode_prompt_answer(tok, MESSAGES, "blue", max_length=128)
    answer = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE]
    assert tok.decode(answer) == "blue<|im_end|>"
    assert enc.n_answer == len(answer) and not enc.truncated
    prompt = tok.decode(enc.input_ids[: len(enc.input_ids) - len(answer)])
    assert prompt.endswith("<|im_start|>assistant\n") and "what colour is the sky" in prompt


def test_truncation_keeps_the_answer(tiny_decoder: Path) -> None:
    tok = load_tokenizer(tiny_decoder)
    long = [{"role": "user", "content": "word " * 200}]
    enc = encode_prompt_answer(tok, long, "blue", max_length=64)
    assert enc.truncated and len(enc.input_ids) <= 64 and enc.n_answer > 0


def test_answer_only_logits_equal_the_full_computation(tiny_decoder: Path) -> None:
    tok = load_tokenizer(tiny_decoder)
    model = load_model(resolve_model(str(tiny_decoder)), head="causal_lm").eval()
    batch = collate_causal([encode_prompt_answer(tok, MESSAGES, a, 128) for a in ("blue", "a pale grey blue")],
                           pad_id=tok.pad_token_id)
    loss, n = causal_loss_sum(model, batch)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    reference = torch.nn.functional.cross_entropy(full.reshape(-1, full.shape[-1]), targets.reshape(-1),
                                                  ignore_index=IGNORE, reduction="sum")
    assert n == int((targets != IGNORE).sum())
    assert torch.allclose(loss, reference, atol=1e-4)
    logits, _, rows = answer_logits(model, batch)
    assert logits.shape == (n, full.shape[-1]) and rows.tolist() == sorted(rows.tolist())


def test_every_example_once_per_epoch_and_grouped_by_length() -> None:
    cfg = TrainConfig(batch_size=4, grad_accum=2, seed=3)
    lengths = [(i * 37) % 101 for i in range(30)]
    batches = epoch_batches(lengths, cfg, epoch=0)
    flat = [i for b in batches for i in b]
    assert set(flat) == set(range(30)) and len(batches) % cfg.grad_accum == 0
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 40  # random batches of 4 from 0..100 spread about 60


def test_resumed_batches_continue_exactly() -> None:
    cfg = TrainConfig(batch_size=4, grad_accum=2, seed=1)
    lengths = list(range(25))
    straight = micro_batches(lengths, cfg, 0)
    first = [next(straight) for _ in range(20)]
    resumed = micro_batches(lengths, cfg, 5)  # step 5 = micro-batch 10
    assert [next(resumed) for _ in range(10)] == first[10:]


def test_shared_prompt_option_scores_equal_full_sequence_scores(tiny_decoder: Path) -> None:
    from tuneforge.tasks.base import end_of_turn, prompt_text
    from tuneforge.tasks.decoding import answer_logprobs, option_logprobs

    tok = load_tokenizer(tiny_decoder)
    model = load_model(resolve_model(str(tiny_decoder)), head="causal_lm").eval()
    labels = ["pos", "negative", "a longer neutral label"]
    prompt = tok(prompt_text(tok, MESSAGES), add_special_tokens=False)["input_ids"]
    options = [tok(lab + end_of_turn(tok), add_special_tokens=False)["input_ids"] for lab in labels]
    shared = option_logprobs(model, prompt, options, pad=tok.pad_token_id)
    full = answer_logprobs(model, tok, [encode_prompt_answer(tok, MESSAGES, lab, 512) for lab in labels], 4)
    assert shared == pytest.approx([s for s, _ in full], abs=1e-4)


def test_decoder_classification_learns_a_separable_task(tmp_path: Path, tiny_decoder: Path) -> None:
    from conftest import base_recipe, sentiment_rows, write_jsonl
    from tuneforge import api

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40))
    report = api.train(base_recipe(tiny_decoder, "classification", train, tmp_path / "run", epochs=6, lr=1e-2),
                       echo=lambda *_: None).report
    assert report is not None and report["tuned"]["accuracy"] >= 0.75
    probs = report["tuned"]["per_class"]
    assert set(probs) == {"neg", "pos"}


@pytest.mark.parametrize("absent, expected, says", [
    ("null", '{"brand": "Acme", "colour": null, "size": "L"}', "Use null"),
    ("omit", '{"brand": "Acme", "size": "L"}', "Leave out"),
])
def test_extraction_answers_write_or_omit_absent_fields(tiny_decoder: Path, tmp_path: Path, absent: str,
                                                        expected: str, says: str) -> None:
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.tasks.base import Example, get_task

    data = tmp_path / "x.jsonl"
    data.write_text('{"text": "t", "target": {"brand": "Acme"}}\n', encoding="utf-8")
    recipe = recipe_from_dict({"task": "extraction", "model": str(tiny_decoder), "data": {"train": str(data)},
                               "prompt": {"absent_fields": absent}})
    task = get_task(recipe, load_tokenizer(tiny_decoder), "decoder")
    task.fit_schema([Example(where="x:1", text="t", target={"brand": "Acme", "colour": None, "size": "L"})])
    assert task.answer({"brand": "Acme", "size": "L"}) == expected
    assert says in task._messages("a large Acme coat")[-1]["content"]
    # scoring reads a left-out field as null, so both layouts score the same
    examples = [Example(where="x:1", text="t", target={"brand": "Acme", "colour": None, "size": "L"})]
    pred = [{"prediction": {"brand": "Acme", "size": "L"}}]
    assert task.score(examples, pred)["exact_match"] == 1.0
