"""How the next token is chosen: greedy, or sampled with temperature and nucleus (top-p), per row.

Each sampled row owns a ``torch.Generator`` seeded from its request, so a seeded answer is the same
whichever other rows share its batch (the OpenAI ``seed`` promise, kept exactly here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """Decoding choices of one answer. ``temperature == 0`` is greedy (and ignores ``top_p`` and ``seed``)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # strings that end the answer; the answer stops before the first one

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self) -> torch.Generator | None:
        """The row's own random stream (None for greedy rows)."""
        if self.greedy:
            return None
        g = torch.Generator()
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed)
        return g


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Probabilities ``(V,)`` after temperature, with the tail outside the top-p mass removed.

    The smallest set of most likely tokens whose mass reaches ``top_p`` is kept (Holtzman et al.
    2020, https://arxiv.org/abs/1904.09751); the most likely token is always kept.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (V,)
    if top_p >= 1:
        return probs
    sorted_p, order = torch.sort(probs, descending=True)  # (V,), (V,)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly above each token
    sorted_p = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
    out = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return out / out.sum()


def next_tokens(logits: torch.Tensor, rules: list[Sampling], generators: list[torch.Generator | None]) -> torch.Tensor:
    """The next token of every row ``(B,)`` from the last position's logits ``(B, V)``."""
    chosen = logits.argmax(dim=-1)  # (B,): greedy rows, and the starting point of sampled ones
    for row, (rule, gen) in enumerate(zip(rules, generators)):
        if not rule.greedy:
            probs = nucleus_probs(logits[row], rule.temperature, rule.top_p)
            chosen[row] = torch.multinomial(probs.cpu(), 1, generator=gen)[0]
    return chosen
