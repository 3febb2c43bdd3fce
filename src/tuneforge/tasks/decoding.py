"""Batched inference for decoder tasks: generation, answer scoring, answer perplexity.

Generation runs on ``tuneforge.infer``'s decode loop (rows leave as they finish and the batch is
refilled from a length-sorted queue, decoding stops on the end-of-turn token); results come back
in the caller's order. Soft prompts and prefixes, which bring their own cache, go through
``model.generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tuneforge.infer import Generated, Sampling, generate_ids
from tuneforge.infer.cache import new_cache
from tuneforge.infer.engine import cache_keyword, left_padded
from tuneforge.infer.precision import InferDtype, weights_in
from tuneforge.tasks.base import (
    Encoded, answer_logits, collate_causal, end_of_turn, pad_id, prompt_text, without_ddp,
)

T = TypeVar("T")


def _batches_by_length(items: Sequence[T], size: int, length: Callable[[T], int]) -> Iterator[list[int]]:
    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Tokens that end an answer: the template's end-of-turn token and the eos token."""
    stop_ids = {int(tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)))}
    if tokenizer.eos_token_id is not None:
        stop_ids.add(int(tokenizer.eos_token_id))
    return stop_ids


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """The chat-templated prompt as token ids, ending where the assistant's answer starts."""
    return list(tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"])


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict[str, str]]],
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generate",
    sampling: Sampling | None = None,
    dtype: InferDtype = "auto",
) -> list[str]:
    """Answers to chat prompts (greedy unless ``sampling`` says otherwise), decoded without special tokens.

    ``sampling`` carries temperature, top_p, seed and stop strings; its ``max_new_tokens`` wins.
    ``dtype`` is the recipe's ``eval.dtype`` (``tuneforge.infer.precision``).
    """
    return [g.text.strip() for g in generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                                     batch_size=batch_size, desc=desc, sampling=sampling,
                                                     dtype=dtype)]


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict[str, str]]],
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generate",
    sampling: Sampling | None = None,
    dtype: InferDtype = "auto",
) -> list[Generated]:
    """Answers with their tokens and finish reasons, on the fast decode path (``tuneforge.infer``), in ``dtype``."""
    rule = sampling or Sampling(max_new_tokens=max_new_tokens)
    encoded = [prompt_ids(tokenizer, m) for m in prompts]
    with weights_in(model, dtype, "decode"):
        if prompt_learning(model):
            return generate_with_transformers(model, tokenizer, encoded, rule, batch_size, desc)
        return _decode(model, tokenizer, encoded, rule, batch_size, desc)


def _decode(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: list[list[int]], rule: Sampling,
            batch_size: int, desc: str) -> list[Generated]:
    with tqdm(total=len(encoded), desc=desc, leave=False) as bar:
        return generate_ids(model, tokenizer, encoded, [rule] * len(encoded), batch_size=batch_size,
                            stop_ids=stop_token_ids(tokenizer), pad=pad_id(tokenizer), on_done=lambda: bar.update(1))


def prompt_learning(model: PreTrainedModel) -> bool:
    """Whether a prompt-learning adapter (soft prompt, prefix) brings its own cache: then only
    ``model.generate`` decodes it, and the fast path (``tuneforge.infer``) steps aside."""
    config = getattr(without_ddp(model), "active_peft_config", None)
    return bool(config is not None and config.is_prompt_learning)


@torch.no_grad()
def generate_with_transformers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: list[list[int]],
                                rule: Sampling, batch_size: int, desc: str) -> list[Generated]:
    """``model.generate`` over length-sorted batches: the path for soft prompts and prefixes."""
    stop_ids = stop_token_ids(tokenizer)
    pad = pad_id(tokenizer)
    out: list[Generated] = [Generated([], "", "stop")] * len(encoded)
    was_training = model.training
    model.eval()
    device = _device(model)
    if rule.seed is not None:
        torch.manual_seed(rule.seed)
    sample = {} if rule.greedy else {"temperature": rule.temperature, "top_p": rule.top_p}
    for idx in tqdm(list(_batches_by_length(encoded, batch_size, len)), desc=desc, leave=False):
        ids, mask = left_padded([encoded[i] for i in idx], pad)  # (B, T)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=rule.max_new_tokens, do_sample=not rule.greedy,
                             eos_token_id=sorted(stop_ids),
                             pad_token_id=pad, stop_strings=list(rule.stop) or None, tokenizer=tokenizer,
                             **sample)  # (B, T + new)
        for row, i in enumerate(idx):
            answer = gen[row, ids.shape[1] :].tolist()
            end = next((k for k, t in enumerate(answer) if t in stop_ids), None)
            new = answer if end is None else answer[:end]
            text = tokenizer.decode(new, skip_special_tokens=True)
            cut = min((text.find(s) for s in rule.stop if s in text), default=-1)
            reason = "length" if end is None and len(new) >= rule.max_new_tokens else "stop"
            out[i] = Generated(new, text[:cut] if cut >= 0 else text, reason, None if end is None else answer[end])
    model.train(was_training)
    return out


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: list[Encoded], batch_size: int,
    dtype: InferDtype = "auto",
) -> list[tuple[float, int]]:
    """Summed log-probability of each example's answer tokens, and how many there were (model in ``dtype``)."""
    with weights_in(model, dtype, "score"):
        return _answer_logprobs(model, tokenizer, encoded, batch_size)


def _answer_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: list[Encoded], batch_size: int
) -> list[tuple[float, int]]:
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
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **{cache_keyword(model): cache}).logits
    logp = torch.log_softmax(logits.float(), dim=-1)  # (K, W, V): position j predicts option token j+1
    scores = []
    for i, option in enumerate(options):
        rest = sum(float(logp[i, j - 1, option[j]]) for j in range(1, len(option)))
        scores.append(float(first[option[0]]) + rest)
    return scores


OPTION_ROWS = 128  # prompt x option rows per scoring forward: bounds the repeated cache (rows x T x layers)


@torch.no_grad()
def options_logprobs(model: PreTrainedModel, prompts: list[list[int]], options: list[list[int]], pad: int,
                     batch_size: int, dtype: InferDtype = "auto") -> list[list[float]]:
    """Summed log-probability of each option after each prompt, many prompts per forward.

    :func:`option_logprobs` runs one prompt at a time, which on CPU leaves the matrix products
    at one row (bound by reading the weights). Here length-sorted prompts run together, left-padded;
    their cache is repeated for the K options, which then run as one ``(B*K, W)`` batch. The model
    runs in ``dtype`` (``tuneforge.infer.precision``).
    """
    with weights_in(model, dtype, "score"):
        return _options_logprobs(model, prompts, options, pad, batch_size)


def _options_logprobs(model: PreTrainedModel, prompts: list[list[int]], options: list[list[int]], pad: int,
                      batch_size: int) -> list[list[float]]:
    device = _device(model)
    k = len(options)
    per_forward = max(1, min(batch_size, OPTION_ROWS // k))
    width = max(len(o) for o in options)
    opt_ids = torch.full((k, width), pad, dtype=torch.long)  # (K, W), right-padded
    opt_mask = torch.zeros((k, width), dtype=torch.long)
    for i, option in enumerate(options):
        opt_ids[i, : len(option)] = torch.tensor(option)
        opt_mask[i, : len(option)] = 1
    keyword = cache_keyword(model)
    out: list[list[float]] = [[] for _ in prompts]
    for idx in _batches_by_length(prompts, per_forward, len):
        ids, mask = left_padded([prompts[i] for i in idx], pad)  # (B, T)
        position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # (B, T)
        cache = new_cache()
        first = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position.to(device),
                      use_cache=True, logits_to_keep=1, **{keyword: cache}).logits[:, -1]  # (B, V)
        first = torch.log_softmax(first.float(), dim=-1)
        for layer in cache.layers:
            layer.batch_repeat_interleave(k)  # (B*K, H, T, D)
        b = len(idx)
        lengths = torch.tensor([len(prompts[i]) for i in idx]).repeat_interleave(k)  # (B*K,)
        rows_mask = torch.cat([mask.repeat_interleave(k, 0), opt_mask.repeat(b, 1)], dim=1)  # (B*K, T+W)
        rows_pos = lengths.unsqueeze(1) + torch.arange(width).unsqueeze(0)  # (B*K, W)
        logits = model(input_ids=opt_ids.repeat(b, 1).to(device), attention_mask=rows_mask.to(device),
                       position_ids=rows_pos.to(device), use_cache=True, **{keyword: cache}).logits
        logp = torch.log_softmax(logits.float(), dim=-1).view(b, k, width, -1)  # (B, K, W, V)
        for row, i in enumerate(idx):
            out[i] = [float(first[row, o[0]]) + sum(float(logp[row, j, t - 1, o[t]]) for t in range(1, len(o)))
                      for j, o in enumerate(options)]
    return out
