"""The inference dtype: which one "auto" picks, the exact restore, and bf16 greedy equal to generate in bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tuneforge.errors import ConfigError
from tuneforge.infer import Sampling, precision
from tuneforge.infer.precision import resolve_dtype, weights_in
from tuneforge.models.loading import load_tokenizer
from tuneforge.tasks.decoding import generate_answers, generate_with_transformers, prompt_ids

CPU, META = torch.device("cpu"), torch.device("meta")


@pytest.fixture()
def model(tiny_decoder: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(tiny_decoder).eval()


@pytest.fixture()
def tok(tiny_decoder: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(tiny_decoder)


@pytest.mark.parametrize(("fast", "device", "want"), [(True, CPU, torch.bfloat16), (False, CPU, None),
                                                      (None, CPU, None), (True, META, None)])
def test_auto_is_bf16_only_on_a_cpu_that_multiplies_it_natively(
        monkeypatch: pytest.MonkeyPatch, fast: bool | None, device: torch.device, want: torch.dtype | None) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_dtype("auto", device, "score") == want
    assert resolve_dtype("auto", device, "decode") is None  # measured: no faster, and the answers change
    assert resolve_dtype("float32", device, "decode") == torch.float32


def test_bfloat16_on_a_cpu_without_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ConfigError, match="eval.dtype"):
        resolve_dtype("bfloat16", CPU, "score")


def test_weights_are_cast_inside_and_the_very_same_tensors_come_back(model: PreTrainedModel,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    with weights_in(model, "bfloat16", "decode") as dtype:
        assert dtype == torch.bfloat16
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    for n, p in model.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.equal(p.detach(), before[n][1]), n  # the same storage
    with pytest.raises(RuntimeError), weights_in(model, "bfloat16", "decode"):  # restored on error too
        raise RuntimeError("boom")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_float32_choice_leaves_a_float32_model_untouched(model: PreTrainedModel) -> None:
    storage = [p.data_ptr() for p in model.parameters()]
    with weights_in(model, "float32", "score"):
        assert [p.data_ptr() for p in model.parameters()] == storage


def test_bf16_greedy_equals_generate_on_the_same_bf16_model(model: PreTrainedModel, tok: PreTrainedTokenizerBase,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)  # tiny products: fine on any CPU
    chats = [[{"role": "user", "content": t}] for t in ("hello there", "a much longer question about colours",
                                                         "x", "three words here", "what is the price of it")]
    rule = Sampling(max_new_tokens=10)
    fast = generate_answers(model, tok, chats, max_new_tokens=10, batch_size=1, dtype="bfloat16")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # given back after the call
    with weights_in(model, "bfloat16", "decode"):
        ref = generate_with_transformers(model, tok, [prompt_ids(tok, c) for c in chats], rule, 1, "hf")
    assert [g.tokens for g in fast] == [g.tokens for g in ref]
    assert sum(len(g.tokens) for g in fast) > len(chats)  # real answers, not all stopping at once
