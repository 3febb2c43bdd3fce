"""The decode loop against transformers' ``generate`` on a tiny random Llama, token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tuneforge.infer import DecodeBatch, Sampling, generate_ids
from tuneforge.infer.engine import left_padded
from tuneforge.models.loading import load_tokenizer
from tuneforge.tasks.decoding import (
    generate_with_transformers,
    generate_answers,
    pad_id,
)

PROMPTS = [[5, 9, 13], [7, 21, 40, 41, 3, 8, 8, 30, 2], [11], [33, 34, 35, 36, 37, 38], [4, 4, 50, 60, 70, 80, 90, 100,
           110, 120, 130, 17], [19, 23], [61, 62, 63, 64, 65]]
NEW = 12


@pytest.fixture(scope="module")
def model(tiny_decoder: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(tiny_decoder).eval()


@pytest.fixture(scope="module")
def tok(tiny_decoder: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(tiny_decoder)


@torch.no_grad()
def hf_greedy(model: PreTrainedModel, prompt: list[int], stop: int | None, new: int = NEW) -> list[int]:
    """transformers' own greedy answer to one prompt, cut at (and without) the stop token."""
    out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=new, do_sample=False,
                         eos_token_id=stop, pad_token_id=0)[0, len(prompt) :].tolist()
    return out[: out.index(stop)] if stop is not None and stop in out else out


def mid_answer_token(model: PreTrainedModel) -> int:
    """A token that some greedy answers emit part-way (and others never), so rows stop at different steps."""
    answers = [hf_greedy(model, p, None) for p in PROMPTS]
    counts: dict[int, int] = {}
    for a in answers:
        for t in set(a[1:-1]):
            counts[t] = counts.get(t, 0) + 1
    shared = [t for t, c in counts.items() if 1 <= c < len(PROMPTS)]
    assert shared, "the tiny model's answers share no token; pick other prompts"
    return shared[0]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_greedy_equals_transformers_generate(model: PreTrainedModel, tok: PreTrainedTokenizerBase,
                                             batch_size: int) -> None:
    stop = mid_answer_token(model)
    rules = [Sampling(max_new_tokens=NEW)] * len(PROMPTS)
    got = generate_ids(model, tok, PROMPTS, rules, batch_size=batch_size, stop_ids={stop}, pad=0)
    want = [hf_greedy(model, p, stop) for p in PROMPTS]
    assert [g.tokens for g in got] == want
    assert [g.finish_reason for g in got] == ["length" if len(w) == NEW else "stop" for w in want]
    assert any(len(w) < NEW for w in want) and any(len(w) == NEW for w in want)  # both ways of ending were tried


def test_greedy_equals_batched_generate_with_left_padding(model: PreTrainedModel,
                                                         tok: PreTrainedTokenizerBase) -> None:
    """The same comparison with transformers batching the prompts itself (left-padded, one call)."""
    ids, mask = left_padded(PROMPTS, 0)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[:, ids.shape[1] :]
    got = generate_ids(model, tok, PROMPTS, [Sampling(max_new_tokens=NEW)] * len(PROMPTS), batch_size=4,
                       stop_ids=set(), pad=0)
    assert [g.tokens for g in got] == out.tolist()


def test_rows_joining_between_steps_get_their_own_answers(model: PreTrainedModel,
                                                          tok: PreTrainedTokenizerBase) -> None:
    """Continuous batching: a row added while others are mid-answer decodes as it would alone."""
    batch = DecodeBatch(model, tok, set(), 0)
    rule = Sampling(max_new_tokens=NEW)
    tokens: dict[int, list[int]] = {i: [] for i in range(len(PROMPTS))}
    events = batch.add([0, 1], PROMPTS[:2], [rule, rule])
    pending = list(range(2, len(PROMPTS)))
    while len(batch) or pending:
        for e in events:
            if e.token is not None:
                tokens[e.key].append(e.token)
        events = batch.add([pending[0]], [PROMPTS[pending.pop(0)]], [rule]) if pending and len(tokens[0]) % 3 == 1 \
            else batch.step()
        if not len(batch) and pending:
            events += batch.add([pending[0]], [PROMPTS[pending.pop(0)]], [rule])
    for e in events:
        if e.token is not None:
            tokens[e.key].append(e.token)
    assert [tokens[i] for i in range(len(PROMPTS))] == [hf_greedy(model, p, None) for p in PROMPTS]


def test_sampling_is_seeded_per_row(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    rule = Sampling(max_new_tokens=NEW, temperature=1.5, top_p=0.95, seed=7)
    alone = generate_ids(model, tok, PROMPTS[:1], [rule], batch_size=1, stop_ids=set(), pad=0)[0].tokens
    crowd = generate_ids(model, tok, PROMPTS, [rule] * len(PROMPTS), batch_size=8, stop_ids=set(), pad=0)
    assert crowd[0].tokens == alone  # the same seed gives the same answer whoever shares the batch
    other = generate_ids(model, tok, PROMPTS[:1], [Sampling(max_new_tokens=NEW, temperature=1.5, seed=8)],
                         batch_size=1, stop_ids=set(), pad=0)[0].tokens
    assert other != alone
    assert alone != hf_greedy(model, PROMPTS[0], None)  # it really sampled


def test_tiny_top_p_is_greedy(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    rule = Sampling(max_new_tokens=NEW, temperature=1.0, top_p=1e-6, seed=1)
    got = generate_ids(model, tok, PROMPTS, [rule] * len(PROMPTS), batch_size=4, stop_ids=set(), pad=0)
    assert [g.tokens for g in got] == [hf_greedy(model, p, None) for p in PROMPTS]


def test_stop_string_ends_the_answer_before_it(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    texts = [tok.decode(hf_greedy(model, p, None), skip_special_tokens=True) for p in PROMPTS]
    k, full = max(enumerate(texts), key=lambda kv: len(kv[1].strip()))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), f"pick another cut of {full!r}"
    got = generate_ids(model, tok, PROMPTS[k : k + 1], [Sampling(max_new_tokens=NEW, stop=(stop,))], batch_size=1,
                       stop_ids=set(), pad=0)[0]
    assert got.finish_reason == "stop"
    assert got.text == full[: full.index(stop)]


def test_bad_sampling_is_refused() -> None:
    with pytest.raises(ValueError, match="top_p"):
        Sampling(max_new_tokens=4, top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(max_new_tokens=4, temperature=-1)


def test_chat_generation_matches_the_transformers_path(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    """``tasks.decoding`` on the fast path and on ``model.generate`` (its soft-prompt path) agree, end of turn too."""
    chats = [[{"role": "user", "content": t}] for t in ["say red", "the blue lamp is great item 3", "hi", "colour?"]]
    fast = generate_answers(model, tok, chats, max_new_tokens=NEW, batch_size=3, dtype="float32")
    from tuneforge.tasks.decoding import prompt_ids, stop_token_ids
    slow = generate_with_transformers(model, tok, [prompt_ids(tok, c) for c in chats], Sampling(max_new_tokens=NEW),
                                       2, "test")
    assert [(g.tokens, g.text, g.finish_reason) for g in fast] == [(g.tokens, g.text, g.finish_reason) for g in slow]
    assert stop_token_ids(tok) == {tok.convert_tokens_to_ids("<|im_end|>")}
    assert pad_id(tok) == 0
