"""LoRA dropout folded into ``lora_A``: the same distribution and the same gradients as peft's path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tuneforge.accel import lora_dropout
from tuneforge.accel.lora_dropout import DropoutLoraA, draw_dropped, fold_lora_dropout, zero_dropped


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """The kept elements of one draw, as a bool mask."""
    return zero_dropped(torch.ones(shape, device=device), draw_dropped(shape, p, device)).bool()


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_mask_is_bernoulli(p: float) -> None:
    torch.manual_seed(0)
    n = 400_000
    mask = keep_mask(torch.Size([n]), p, torch.device("cpu"))
    dropped = (~mask).float()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(float(dropped.mean()) - p) < 5 * sigma
    both = float((dropped[1:] * dropped[:-1]).mean())  # neighbours independent: P(both dropped) = p^2
    assert abs(both - p * p) < 5 * (p * p / n) ** 0.5 + 1e-4
    blocks = dropped.view(100, -1).mean(1)  # no drift along the tensor
    assert float((blocks - p).abs().max()) < 5 * (p * (1 - p) / (n / 100)) ** 0.5


def test_keep_mask_follows_the_torch_seed() -> None:
    shape = torch.Size([64, 300])
    torch.manual_seed(3)
    a = keep_mask(shape, 0.05, torch.device("cpu"))
    torch.manual_seed(3)
    b = keep_mask(shape, 0.05, torch.device("cpu"))
    assert a.shape == shape and torch.equal(a, b)


def test_positions_and_mask_records_zero_the_same_elements() -> None:
    torch.manual_seed(2)
    shape = torch.Size([37, 50])
    record = lora_dropout.draw_dropped(shape, 0.05, torch.device("cpu"))
    assert record.dtype == torch.int32  # positions at a low rate on a CPU
    x = torch.randn(shape) + 10.0  # no zeros of its own
    by_positions = lora_dropout.zero_dropped(x.clone(), record)
    torch.manual_seed(2)
    mask = keep_mask(shape, 0.05, torch.device("cpu"))
    assert torch.equal(by_positions, x * mask) and torch.equal(lora_dropout.zero_dropped(x.clone(), mask), by_positions)
    assert int((by_positions == 0).sum()) == record.numel() > 0


def test_dropped_positions_cover_a_long_tail() -> None:
    torch.manual_seed(0)  # a tiny first draw forces the loop that draws again
    pos = lora_dropout._dropped_positions(50_000, 0.001)
    assert torch.all(pos[1:] > pos[:-1]) and int(pos.max()) < 50_000


def _inputs_with_a_fixed_mask(monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 7, 12, requires_grad=True)
    w = torch.randn(4, 12, requires_grad=True)
    mask = torch.rand(2, 7, 12) > 0.2
    monkeypatch.setattr(lora_dropout, "draw_dropped", lambda shape, p, device: mask)  # a bool record
    return x, w, mask


def test_forward_and_gradients_match_the_explicit_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w, mask = _inputs_with_a_fixed_mask(monkeypatch)
    out = lora_dropout._DropoutLinear.apply(x, w, 0.2)
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, w), grad)
    x2, w2 = x.detach().requires_grad_(), w.detach().requires_grad_()
    ref = (x2 * mask / 0.8) @ w2.t()
    rx, rw = torch.autograd.grad(ref, (x2, w2), grad)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)


def test_bf16_autocast_gives_float32_gradients_close_to_the_float32_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast the incoming gradient is bf16 while x and the weight stay float32 (train.dtype bfloat16)."""
    x, w, _ = _inputs_with_a_fixed_mask(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lora_dropout._DropoutLinear.apply(x, w, 0.2)
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, w), grad)
    assert out.dtype == torch.bfloat16 and gx.dtype == torch.float32 and gw.dtype == torch.float32
    rx, rw = torch.autograd.grad(lora_dropout._DropoutLinear.apply(x, w, 0.2), (x, w), grad.float())
    torch.testing.assert_close(gx, rx, rtol=0.05, atol=0.05)
    torch.testing.assert_close(gw, rw, rtol=0.05, atol=0.05)


def _peft(tiny_decoder: Path, dropout: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config)


def test_fold_keeps_names_and_eval_outputs(tiny_decoder: Path) -> None:
    model = _peft(tiny_decoder, 0.1)
    ids = torch.randint(0, 100, (2, 9))
    model.eval()
    before = model(input_ids=ids).logits
    keys = sorted(model.state_dict())
    changed = fold_lora_dropout(model)
    assert changed == sum(1 for m in model.modules() if isinstance(m, DropoutLoraA)) > 0
    assert sorted(model.state_dict()) == keys  # adapter files and merging see the same parameters
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model(input_ids=ids).logits, before)  # dropout is active in training


def test_no_dropout_or_dora_keeps_peft_path(tiny_decoder: Path) -> None:
    assert fold_lora_dropout(_peft(tiny_decoder, 0.0)) == 0
    torch.manual_seed(0)
    dora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_decoder),
                          LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear", use_dora=True))
    assert fold_lora_dropout(dora) == 0


def test_gradient_checkpointing_replays_the_same_masks(tiny_decoder: Path) -> None:
    grads = []
    for checkpointing in (False, True):
        model = _peft(tiny_decoder, 0.1)
        fold_lora_dropout(model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model.train()
        torch.manual_seed(1)
        ids = torch.randint(0, 100, (2, 9))
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)
