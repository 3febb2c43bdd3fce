"""Batched label scoring gives the numbers of the one-prompt-at-a-time scorer it replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge.tasks.decoding import option_logprobs, options_logprobs

PROMPTS = [[5, 9, 13], [7, 21, 40, 41, 3, 8, 8, 30, 2], [11], [33, 34, 35, 36, 37, 38], [19, 23]]
OPTIONS = [[40, 2], [41], [42, 43, 44, 2], [45, 2]]  # different lengths, so right padding is exercised


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_batched_option_scores_equal_one_prompt_at_a_time(tiny_decoder: Path, batch_size: int) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder).eval()
    want = [option_logprobs(model, p, OPTIONS, 0) for p in PROMPTS]
    got = options_logprobs(model, PROMPTS, OPTIONS, 0, batch_size, "float32")
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-5, rtol=0)
    assert len({tuple(round(x, 3) for x in row) for row in got}) == len(PROMPTS)  # the prompts really differ
