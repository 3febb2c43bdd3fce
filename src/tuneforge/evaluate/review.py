"""Blind human review of two systems' answers on the same items, and what the ratings are worth.

Why blind: a rater who knows which answer is the fine-tune prefers it. Each pair is shown with the
sides drawn at random (seeded, so a review can be rebuilt), and the key that says which side is
which is kept apart from what the rater sees. A rating becomes a preference row (``prompt``,
``chosen``, ``rejected``), which the ``preference`` and ``reward_model`` tasks read as training data
(a tie carries no preference and gives no row). The win rate counts a tie as half a win and comes
with a 95% percentile bootstrap interval, as every other figure in a tuneforge report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from tuneforge.errors import UserError
from tuneforge.evaluate.metrics import bootstrap_ci

Side = Literal["a", "b"]
Choice = Literal["left", "right", "tie"]
CHOICES: tuple[str, ...] = ("left", "right", "tie")


@dataclass(frozen=True)
class BlindPair:
    """Item ``index``: what the rater sees (``left``, ``right``) and the key (``left_is``)."""

    index: int
    prompt: str
    left: str
    right: str
    left_is: Side

    def answer_of(self, side: Side) -> str:
        return self.left if side == self.left_is else self.right


def blind_pairs(prompts: list[str], answers_a: list[str], answers_b: list[str], *, seed: int = 0) -> list[BlindPair]:
    """One pair per item, system A on the left or the right by a seeded coin."""
    if not len(prompts) == len(answers_a) == len(answers_b):
        raise UserError(f"review needs one answer of each system per item: {len(prompts)} items, "
                        f"{len(answers_a)} and {len(answers_b)} answers")
    rng = random.Random(seed)
    pairs = []
    for i, (prompt, a, b) in enumerate(zip(prompts, answers_a, answers_b)):
        a_left = rng.random() < 0.5
        pairs.append(BlindPair(i, prompt, a if a_left else b, b if a_left else a, "a" if a_left else "b"))
    return pairs


def winner(pair: BlindPair, choice: str) -> Side | None:
    """Which system the rater preferred (None for a tie), by the hidden key."""
    if choice not in CHOICES:
        raise UserError(f"a rating is one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "tie":
        return None
    other: Side = "b" if pair.left_is == "a" else "a"
    return pair.left_is if choice == "left" else other


def preference_row(pair: BlindPair, choice: str, **meta: Any) -> dict[str, Any] | None:
    """The rating as a preference pair a DPO or reward-model recipe reads; None for a tie."""
    won = winner(pair, choice)
    if won is None:
        return None
    lost: Side = "b" if won == "a" else "a"
    return {"prompt": pair.prompt, "chosen": pair.answer_of(won), "rejected": pair.answer_of(lost), **meta}


def win_rate(winners: list[Side | None]) -> dict[str, Any]:
    """A's win rate over B (a tie counts half) with its 95% bootstrap interval, and the counts.

    >>> win_rate(["a", "a", None, "b"])["rate"]
    0.625
    """
    if not winners:
        return {"n": 0, "wins": 0, "ties": 0, "losses": 0, "rate": None, "interval": None}
    scores = [1.0 if w == "a" else 0.5 if w is None else 0.0 for w in winners]
    return {"n": len(scores), "wins": winners.count("a"), "ties": winners.count(None), "losses": winners.count("b"),
            "rate": sum(scores) / len(scores), "interval": list(bootstrap_ci(scores))}
