"""Decoder formatting and the answer-only loss on a tiny model; batching of the loop."""

from __future__ import annotations

from pathlib import Path

import torch

from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.registry import resolve_model
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
