"""Answer log-probabilities of the policy and of the reference, which is the policy with its adapter off.

Why no second model: with a peft adapter the frozen base weights *are* the reference, so
``model.disable_adapter()`` under ``no_grad`` gives its log-probabilities at no memory cost (trl does the
same when ``ref_model=None`` with a peft model). Methods without an adapter (full fine-tuning) would need
a second copy or log-probabilities precomputed before training; tuneforge refuses them for the losses
that need a reference and says which losses do not (SimPO, ORPO).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuneforge.errors import ConfigError
from tuneforge.tasks.base import (IGNORE, Encoded, answer_logits, collate_causal, end_of_turn, prompt_text,
                                  without_ddp)

Messages = list[dict[str, str]]


def check_reference(method_name: str, what: str) -> None:
    """Refuse a method whose model has no adapter to switch off (no reference without a second copy)."""
    from tuneforge.methods import METHODS
    from tuneforge.methods.peft_base import PeftMethod

    if not issubclass(METHODS.get(method_name), PeftMethod):
        raise ConfigError(f"{what} compares with the reference model, which tuneforge gets by switching the "
                          f"adapter off; method {method_name!r} has none. Use method: lora (or another peft "
                          "method), or a reference-free loss (preference.loss: simpo or orpo)")


@contextlib.contextmanager
def adapter_off(model: nn.Module) -> Iterator[None]:
    """The reference model: adapter disabled, eval mode (no dropout), no gradients."""
    inner = without_ddp(model)
    was_training = inner.training
    inner.eval()
    try:
        with torch.no_grad(), inner.disable_adapter():
            yield
    finally:
        inner.train(was_training)


def token_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probability of every answer token ``(N,)``, its row ``(N,)``, and the answer logits ``(N, V)``."""
    logits, targets, rows = answer_logits(model, batch)  # (N, V), (N,), (N,)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), rows, logp


def per_row(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums ``(S,)`` of per-token ``values`` ``(N,)`` by row, and the token count of each row ``(S,)``."""
    sums = torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    return sums, torch.bincount(rows, minlength=n_rows)


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probability ``(S,)`` and answer length ``(S,)`` of each row of a causal batch."""
    picked, rows, _ = token_logps(model, batch)
    return per_row(picked, rows, batch["input_ids"].shape[0])


def fit_messages(tokenizer: PreTrainedTokenizerBase, messages: Messages, budget: int) -> Messages:
    """The conversation without its oldest user/assistant exchanges while its prompt exceeds ``budget`` tokens.

    A system message and the last user turn are always kept (the last turn alone may still be too long).
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while len(turns) > 1 and len(tokenizer(prompt_text(tokenizer, system + turns),
                                           add_special_tokens=False)["input_ids"]) > budget:
        turns = turns[2:] if len(turns) > 2 else turns[-1:]
    return system + turns


def trim_messages(tokenizer: PreTrainedTokenizerBase, messages: Messages, budget: int) -> tuple[list[int], bool]:
    """Prompt token ids within ``budget``, and whether anything was cut: the oldest whole turns go first
    (:func:`fit_messages`), then the oldest tokens."""
    kept = fit_messages(tokenizer, messages, budget)
    ids = tokenizer(prompt_text(tokenizer, kept), add_special_tokens=False)["input_ids"]
    return ids[max(0, len(ids) - budget):], len(kept) < len(messages) or len(ids) > budget


def encode_answers(tokenizer: PreTrainedTokenizerBase, messages: Messages, answers: list[str],
                   max_length: int) -> list[Encoded]:
    """One training sequence per answer, all with the same (trimmed) prompt so that they compare fairly.

    The prompt gets what the longest answer leaves of ``max_length`` (at least half of it); answers are cut
    at the end when they still do not fit.
    """
    eot = end_of_turn(tokenizer)
    answer_ids = [tokenizer(a + eot, add_special_tokens=False)["input_ids"] for a in answers]
    longest = max(len(a) for a in answer_ids)
    prompt_ids, cut = trim_messages(tokenizer, messages, max(max_length - longest, max_length // 2))
    out = []
    for ids in answer_ids:
        kept = ids[: max(0, max_length - len(prompt_ids))]
        out.append(Encoded(input_ids=prompt_ids + kept, labels=[IGNORE] * len(prompt_ids) + kept,
                           truncated=cut or len(kept) < len(ids), n_answer=len(kept)))
    return out


@dataclass
class Group(Encoded):
    """One prompt with several answer sequences: (chosen, rejected), a ranking best first, or one judged answer.

    ``input_ids`` / ``labels`` repeat the first sequence so that length grouping and the preflight see a
    representative length; ``n_answer`` is 1: the loop normalises preference losses per example.
    """

    sequences: list[Encoded] = field(default_factory=list)
    desirable: bool = True

    @classmethod
    def of(cls, sequences: list[Encoded], desirable: bool = True) -> Group:
        first = sequences[0]
        return cls(input_ids=first.input_ids, labels=first.labels, n_answer=int(all(s.n_answer > 0 for s in sequences)),
                   truncated=any(s.truncated for s in sequences), sequences=sequences, desirable=desirable)


def collate_groups(batch: list[Group], pad: int) -> dict[str, torch.Tensor]:
    """Every answer sequence of the batch as one right-padded causal batch, group-major.

    ``labels`` is ``(B,)`` (1.0 for a desirable answer): being one-dimensional it makes the loop count
    examples, not tokens, when it normalises the step's loss. ``token_labels`` ``(S, T)`` mark the answer
    tokens; ``group`` / ``rank`` ``(S,)`` say which example and which place in it each row is.
    """
    rows = [s for g in batch for s in g.sequences]
    causal = collate_causal(rows, pad)
    return {"input_ids": causal["input_ids"], "attention_mask": causal["attention_mask"],
            "token_labels": causal["labels"],
            "labels": torch.tensor([float(g.desirable) for g in batch]),  # (B,)
            "group": torch.tensor([i for i, g in enumerate(batch) for _ in g.sequences]),  # (S,)
            "rank": torch.tensor([k for g in batch for k in range(len(g.sequences))])}  # (S,)


def causal_view(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain causal batch (token labels as ``labels``) that ``answer_logits`` reads."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["token_labels"]}


def token_kl(policy_logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Exact KL(policy || reference) over the vocabulary at each position: ``(N, V), (N, V) -> (N,)``."""
    return (policy_logp.exp() * (policy_logp - ref_logp)).sum(-1)


def can_share_prompt(model: nn.Module) -> bool:
    """Prompt sharing needs a plain decoder forward: no soft prompt or prefix of peft's prompt learning."""
    config = getattr(without_ddp(model), "active_peft_config", None)
    return config is None or not config.is_prompt_learning


def group_token_logps(model: nn.Module,
                      batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`token_logps` of a grouped batch, sharing each group's prompt when the model allows it."""
    if can_share_prompt(model):
        return packed_group_token_logps(model, batch)
    return token_logps(model, causal_view(batch))


def group_sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probability ``(S,)`` and answer length ``(S,)`` of each row of a grouped batch."""
    picked, rows, _ = group_token_logps(model, batch)
    return per_row(picked, rows, batch["input_ids"].shape[0])


def _group_rows(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                        torch.Tensor, list[int]]:
    """One row per group: ``[prompt, answer 1, answer 2, ...]``, each answer seeing the prompt and itself.

    Returns the model inputs (``input_ids``/``position_ids`` ``(B, L)``, a boolean ``(B, 1, L, L)`` mask),
    the positions whose hidden states predict answer tokens ``(B, L)``, for each answer token in
    :func:`token_logps` order its index among those positions ``(N,)`` and its target ``(N,)``, and the
    answer lengths ``S``. Padding (token 0, never kept) attends to itself only.
    """
    ids, mask, labels, group = batch["input_ids"], batch["attention_mask"], batch["token_labels"], batch["group"]
    n_prompt = (labels == IGNORE).logical_and(mask.bool()).cumprod(-1).sum(-1).tolist()  # (S,)
    lengths = mask.sum(-1).tolist()  # (S,)
    members: list[list[int]] = [[] for _ in range(int(group.max()) + 1)]
    for s, g in enumerate(group.tolist()):
        members[g].append(s)
    layout: list[tuple[int, int, int]] = [(0, 0, 0)] * len(ids)  # per answer: group, start in its row, length
    widths = []
    for g, rows in enumerate(members):
        at = n_prompt[rows[0]]
        for s in rows:
            layout[s] = (g, at, lengths[s] - n_prompt[s])
            at += lengths[s] - n_prompt[s]
        widths.append(at)
    width = max(widths)
    tokens = torch.zeros((len(members), width), dtype=torch.long)  # (B, L)
    positions = torch.zeros_like(tokens)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(members), 1, 1)  # (B, L, L): padding sees itself
    keep = torch.zeros_like(tokens, dtype=torch.bool)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for g, rows in enumerate(members):
        p = n_prompt[rows[0]]
        tokens[g, :p] = ids[rows[0], :p]
        positions[g, :p] = torch.arange(p)
        allowed[g, :p, :p] = causal[:p, :p]
        keep[g, p - 1] = True  # the prompt's last position predicts every answer's first token
        for s in rows:
            _, at, n = layout[s]
            tokens[g, at : at + n] = ids[s, p : p + n]
            positions[g, at : at + n] = torch.arange(p, p + n)
            allowed[g, at : at + n, :p] = True
            allowed[g, at : at + n, at : at + n] = causal[:n, :n]
            keep[g, at : at + n - 1] = True
    index = torch.full_like(tokens, -1)
    index[keep] = torch.arange(int(keep.sum()))
    order, targets = [], []
    for s in range(len(ids)):
        g, at, n = layout[s]
        p = n_prompt[members[g][0]]
        order += [int(index[g, p - 1])] + index[g, at : at + n - 1].tolist()
        targets += ids[s, p : p + n].tolist()
    device = ids.device
    inputs = {"input_ids": tokens.to(device), "position_ids": positions.to(device),
              "attention_mask": allowed.unsqueeze(1).to(device)}
    answer_lengths = [n for _, _, n in layout]
    return inputs, keep.to(device), torch.tensor(order, device=device), torch.tensor(targets, device=device), \
        answer_lengths


def packed_group_token_logps(model: nn.Module, batch: dict[str, torch.Tensor]
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`token_logps` of a :func:`collate_groups` batch, each group packed into one row.

    The answers of a group (chosen and rejected, or a ranking) continue the same prompt, so a row
    holds the prompt once and then every answer, with position ids that restart at the prompt's end
    for each answer and a mask that lets an answer see the prompt and itself only: each answer token
    gets exactly the context it has alone. Against one padded row per answer this runs the prompt
    once (on HH pairs two thirds of the tokens) and pads no answer to its partner's length (chosen
    and rejected answers differ: 43% of a step was padding on the HH pairs); rows pad only to the
    longest group. Only positions that predict an answer token reach the vocabulary head. Returns per
    answer token ``(N,)`` log-probabilities, rows ``(N,)`` and the log-softmax ``(N, V)``, in the same
    order as :func:`token_logps`.
    """
    inputs, keep, order, targets, lengths = _group_rows(batch)
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (1, K, V) at the kept positions
    logp = torch.log_softmax(logits.reshape(-1, logits.shape[-1]).float(), dim=-1)[order]  # (N, V)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
    rows = torch.repeat_interleave(torch.arange(len(lengths), device=picked.device),
                                   torch.tensor(lengths, device=picked.device))  # (N,)
    return picked, rows, logp
