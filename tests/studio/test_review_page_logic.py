"""Blind review: sides randomised and recoverable from the key, ratings as preference rows, win rate."""

from __future__ import annotations

import pytest

from tuneforge.errors import UserError
from tuneforge.evaluate.metrics import bootstrap_ci
from tuneforge.evaluate.review import blind_pairs, preference_row, win_rate, winner


def test_sides_are_randomised_and_the_key_recovers_them() -> None:
    prompts = [f"q{i}" for i in range(40)]
    pairs = blind_pairs(prompts, [f"A{i}" for i in range(40)], [f"B{i}" for i in range(40)], seed=3)
    lefts = [p.left_is for p in pairs]
    assert 5 < lefts.count("a") < 35  # both sides occur: not always the fine-tune on the left
    for p in pairs:
        assert p.answer_of("a") == f"A{p.index}" and p.answer_of("b") == f"B{p.index}"
    assert blind_pairs(prompts, prompts, prompts, seed=3)[0].left_is == pairs[0].left_is  # seeded


def test_a_rating_is_a_preference_row_by_the_hidden_key() -> None:
    pair = blind_pairs(["q"], ["good"], ["bad"], seed=0)[0]
    good_side = "left" if pair.left == "good" else "right"
    bad_side = "right" if good_side == "left" else "left"
    assert winner(pair, good_side) == "a"
    assert preference_row(pair, good_side, review="r") == {"prompt": "q", "chosen": "good", "rejected": "bad",
                                                           "review": "r"}
    assert preference_row(pair, bad_side) == {"prompt": "q", "chosen": "bad", "rejected": "good"}
    assert preference_row(pair, "tie") is None
    with pytest.raises(UserError):
        winner(pair, "both")


def test_win_rate_counts_ties_half_with_a_bootstrap_interval() -> None:
    stats = win_rate(["a", "a", None, "b"])
    assert stats["rate"] == pytest.approx(0.625)
    assert (stats["wins"], stats["ties"], stats["losses"]) == (2, 1, 1)
    assert stats["interval"] == list(bootstrap_ci([1.0, 1.0, 0.5, 0.0]))
    assert win_rate([])["rate"] is None
