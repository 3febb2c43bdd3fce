"""Batched inference for decoder tasks: greedy generation, answer scoring, answer perplexity.

Why by hand around ``model.generate``: prompts are sorted by length so that a batch wastes little
padding, padded on the left so every row's answer starts at the same column, and decoding stops
on the end-of-turn token; results come back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tuneforge.tasks.base import Encoded, answer_logits, collate_causal, end_of_turn, pad_id, prompt_text

T = TypeVar("T")


def _batches_by_length(items: Sequence[T], size: int, length: Callable[[T], int]) -> Iterator[list[int]]:
    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict[str, str]]],
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers to chat prompts, decoded without special tokens."""
    texts = [prompt_text(tokenizer, m) for m in prompts]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    stop_ids = {tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))}
    if tokenizer.eos_token_id is not None:
        stop_ids.add(int(tokenizer.eos_token_id))
    pad = pad_id(tokenizer)
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    device = _device(model)
    for idx in tqdm(list(_batches_by_length(encoded, batch_size, len)), desc=desc, leave=False):
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)  # (B, T), left-padded
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            mask[row, width - n :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(stop_ids),
            pad_token_id=pad,
        )  # (B, T + new)
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
    model.train(was_training)
    return out


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: list[Encoded], batch_size: int
) -> list[tuple[float, int]]:
    """Summed log-probability of each example's answer tokens, and how many there were."""
    was_training = model.training
    model.eval()
    device = _device(model)
    result: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for idx in _batches_by_length(encoded, batch_size, lambda e: len(e.input_ids)):
        batch = collate_causal([encoded[i] for i in idx], pad_id(tokenizer))
        batch = {k: v.to(device) for k, v in batch.items()}
        logits, targets, rows = answer_logits(model, batch)  # (N, V), (N,), (N,)
        picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
        sums = torch.zeros(len(idx), dtype=picked.dtype).index_add_(0, rows.cpu(), picked.cpu())
        counts = torch.bincount(rows.cpu(), minlength=len(idx))
        for row, i in enumerate(idx):
            result[i] = (float(sums[row]), int(counts[row]))
    model.train(was_training)
    return result


@torch.no_grad()
def option_logprobs(model: PreTrainedModel, prompt_ids: list[int], options: list[list[int]], pad: int) -> list[float]:
    """Summed log-probability of each option continuing one shared prompt.

    The prompt runs once; its key/value cache is repeated for the K options, which then run as
    one (K, W) batch. For 7 labels after an 85-token prompt this is 7x fewer tokens through the
    model than scoring K full sequences.
    """
    device = _device(model)
    k, n = len(options), len(prompt_ids)
    out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (V,): the first option token
    cache = out.past_key_values
    for layer in cache.layers:
        layer.batch_repeat_interleave(k)
    width = max(len(o) for o in options)
    ids = torch.full((k, width), pad, dtype=torch.long)  # (K, W), right-padded
    mask = torch.zeros((k, n + width), dtype=torch.long)  # (K, P + W)
    mask[:, :n] = 1
    for i, option in enumerate(options):
        ids[i, : len(option)] = torch.tensor(option)
        mask[i, n : n + len(option)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache).logits
    logp = torch.log_softmax(logits.float(), dim=-1)  # (K, W, V): position j predicts option token j+1
    scores = []
    for i, option in enumerate(options):
        rest = sum(float(logp[i, j - 1, option[j]]) for j in range(1, len(option)))
        scores.append(float(first[option[0]]) + rest)
    return scores
