"""The decode loop: rows join between steps, decode one token per step together, and leave when they finish.

Why not ``model.generate``: a generate call runs until its slowest row is done, so finished rows
keep decoding padding, and a new prompt waits for the whole batch. Here a row leaves the batch
(its cache rows with it) the step it emits the end-of-turn token, reaches ``max_new_tokens`` or
writes a stop string, and new rows are prefilled and merged in between steps: the batch stays full
offline (``generate_ids`` refills it from a length-sorted queue) and in the server (continuous
batching). Left padding is cut from the cache as soon as no remaining row needs it.

Greedy decoding reads the same logits as transformers' ``generate`` (same positions, same mask,
same cache contents), so its answers are the same token for token (``tests/infer``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache

from tuneforge.infer.cache import merge, new_cache, row_layers
from tuneforge.infer.sampling import Sampling, next_tokens


@dataclass
class Generated:
    """One finished answer: its tokens (without the stopping token), text and why it ended."""

    tokens: list[int]
    text: str
    finish_reason: str  # "stop" (end-of-turn token or a stop string) or "length" (max_new_tokens)
    stop_token: int | None = None  # the end-of-turn (or eos) token that ended it, if one did


@dataclass
class Event:
    """What one row did in one step: the token it emitted (None when it stopped) and, once done, its answer."""

    key: Hashable
    token: int | None
    done: Generated | None = None


@dataclass
class _Row:
    key: Hashable
    rule: Sampling
    generator: torch.Generator | None
    position: int  # position id of the next token it reads
    tokens: list[int] = field(default_factory=list)


def _base(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DDP
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft


def cache_keyword(model: torch.nn.Module) -> str:
    """transformers >= 5.20 names the cache argument ``cache``; earlier versions ``past_key_values``."""
    params = inspect.signature(_base(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def left_padded(prompts: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(B, T)`` and attention mask ``(B, T)``, prompts aligned on the right."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids, mask


class DecodeBatch:
    """The running batch of one model. Not thread-safe: one thread owns it (and the model)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop_ids: set[int],
                 pad: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.pad = pad
        self.device = next(model.parameters()).device
        self.keyword = cache_keyword(model)
        self.rows: list[_Row] = []
        self.cache = new_cache()
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # (B, T): which cache columns each row attends to
        self.last = torch.zeros(0, dtype=torch.long)  # (B,): the token each row reads next

    def __len__(self) -> int:
        return len(self.rows)

    # -- rows joining ---------------------------------------------------------------------
    @torch.no_grad()
    def add(self, keys: Sequence[Hashable], prompts: Sequence[Sequence[int]], rules: Sequence[Sampling]) -> list[Event]:
        """Prefill new rows together and merge them into the batch; returns their first tokens."""
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("an empty prompt cannot be decoded")
        ids, mask = left_padded(prompts, self.pad)  # (b, T)
        position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # (b, T): as transformers' generate
        cache = new_cache()
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=position.to(self.device), use_cache=True, logits_to_keep=1,
                         **{self.keyword: cache})
        rows = [_Row(k, r, r.generator(), len(p)) for k, p, r in zip(keys, prompts, rules, strict=True)]
        self._join(rows, cache, mask)
        first = next_tokens(out.logits[:, -1].float(), [r.rule for r in rows], [r.generator for r in rows])
        self.last = torch.cat([self.last, first.cpu()])
        return self._advance(list(range(len(self.rows) - len(rows), len(self.rows))), first.tolist())

    def _join(self, rows: list[_Row], cache: Cache, mask: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        merge(self.cache, cache, width)
        pad = torch.nn.functional.pad
        self.mask = torch.cat([pad(self.mask, (width - self.mask.shape[1], 0)), pad(mask, (width - mask.shape[1], 0))])
        self.rows = self.rows + rows

    # -- one step -------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[Event]:
        """Every row reads its last token and emits the next; finished rows leave the batch."""
        if not self.rows:
            return []
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long)], dim=1)  # (B, T+1)
        position = torch.tensor([[r.position] for r in self.rows])  # (B, 1)
        out = self.model(input_ids=self.last.unsqueeze(1).to(self.device), attention_mask=self.mask.to(self.device),
                         position_ids=position.to(self.device), use_cache=True, logits_to_keep=1,
                         **{self.keyword: self.cache})
        for r in self.rows:
            r.position += 1
        chosen = next_tokens(out.logits[:, -1].float(), [r.rule for r in self.rows], [r.generator for r in self.rows])
        self.last = chosen.cpu()
        return self._advance(list(range(len(self.rows))), chosen.tolist())

    def _advance(self, indices: list[int], tokens: list[int]) -> list[Event]:
        """Record each row's new token, finish the rows that are done and remove them from the batch."""
        events, leaving = [], []
        for i, token in zip(indices, tokens):
            row = self.rows[i]
            done = self._finish(row, token)
            events.append(Event(row.key, None if token in self.stop_ids else token, done))
            if done is not None:
                leaving.append(i)
        if leaving:
            self._remove(set(leaving))
        return events

    def _finish(self, row: _Row, token: int) -> Generated | None:
        if token in self.stop_ids:
            return Generated(row.tokens, self._text(row), "stop", token)
        row.tokens.append(token)
        if row.rule.stop:
            text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut = min((text.find(s) for s in row.rule.stop if s in text), default=-1)
            if cut >= 0:
                return Generated(row.tokens, text[:cut], "stop")
        if len(row.tokens) >= row.rule.max_new_tokens:
            return Generated(row.tokens, self._text(row), "length")
        return None

    def _text(self, row: _Row) -> str:
        return self.tokenizer.decode(row.tokens, skip_special_tokens=True)

    def drop(self, keys: set[Hashable]) -> None:
        """Remove the rows of ``keys`` unfinished (their callers went away)."""
        leaving = {i for i, r in enumerate(self.rows) if r.key in keys}
        if leaving:
            self._remove(leaving)

    def _remove(self, leaving: set[int]) -> None:
        keep = [i for i in range(len(self.rows)) if i not in leaving]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask, self.last = new_cache(), torch.zeros((0, 0), dtype=torch.long), self.last[:0]
            return
        index = torch.tensor(keep)
        self.mask, self.last = self.mask[index], self.last[index]
        unused = int(self.mask.any(dim=0).long().argmax())  # leading columns no remaining row attends to
        self.mask = self.mask[:, unused:]
        for layer in row_layers(self.cache):
            layer.keep_rows(index.to(self.device))
            layer.drop_left(unused)


def generate_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]],
                 rules: Sequence[Sampling], *, batch_size: int, stop_ids: set[int], pad: int,
                 on_done: Callable[[], None] | None = None) -> list[Generated]:
    """Answers to many prompts, in their order: shortest prompts first, the batch refilled as rows finish.

    New rows join when the batch has fallen to half of ``batch_size``, so each prefill runs a few
    rows at once and the decode batch stays near full; sorted lengths keep the left padding small.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Generated | None] = [None] * len(prompts)
    batch = DecodeBatch(model, tokenizer, stop_ids, pad)
    was_training = model.training
    model.eval()
    try:
        while order or len(batch):
            events: list[Event] = []
            if order and len(batch) <= batch_size // 2:
                take, order = order[: batch_size - len(batch)], order[batch_size - len(batch) :]
                events = batch.add(take, [prompts[i] for i in take], [rules[i] for i in take])
            else:
                events = batch.step()
            for e in events:
                if e.done is not None:
                    out[cast(int, e.key)] = e.done
                    if on_done is not None:
                        on_done()
    finally:
        model.train(was_training)
    missing = [i for i, g in enumerate(out) if g is None]
    if missing:
        raise RuntimeError(f"the decode loop lost prompts {missing[:5]}")
    return cast(list[Generated], out)
