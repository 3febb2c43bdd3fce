"""The gated MLPs' product as one function: bit-identical losses and gradients, one tensor fewer kept."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from conftest import loss_and_grads
from tuneforge.accel.lora_dropout import fold_lora_dropout
from tuneforge.accel.swiglu import gated_mlps


def _saved_numel(model: torch.nn.Module, ids: torch.Tensor) -> int:
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(sizes)


def _lora_model(tiny_decoder: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    """The tiny decoder with LoRA (dropout folded) on every linear layer, in training mode, and a batch."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_decoder),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear",
                                      init_lora_weights=False))
    fold_lora_dropout(model)
    model.train()
    return model, torch.randint(0, 100, (2, 13), generator=torch.Generator().manual_seed(0))


def test_lora_gradients_are_bit_identical_and_the_forward_comes_back(tiny_decoder: Path) -> None:
    model, ids = _lora_model(tiny_decoder)
    ref_loss, ref = loss_and_grads(model, ids)
    with gated_mlps(model, True) as n:
        assert n == model.config.num_hidden_layers
        loss, grads = loss_and_grads(model, ids)
    assert not any("forward" in m.__dict__ for m in model.modules())  # the class's own forward again
    assert torch.equal(loss, ref_loss) and grads.keys() == ref.keys() and grads
    for name, g in ref.items():
        assert torch.equal(grads[name], g), name


def test_full_fine_tuning_gradients_are_bit_identical_with_one_tensor_fewer_kept(tiny_decoder: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    model.train()
    ids = torch.randint(0, 100, (2, 13), generator=torch.Generator().manual_seed(0))
    ref_loss, ref = loss_and_grads(model, ids)
    ref_saved = _saved_numel(model, ids)
    with gated_mlps(model, True):
        loss, grads = loss_and_grads(model, ids)
        saved = _saved_numel(model, ids)
    assert torch.equal(loss, ref_loss) and grads.keys() == ref.keys()
    for name, g in ref.items():
        assert torch.equal(grads[name], g), name
    silu_outputs = model.config.num_hidden_layers * ids.numel() * model.config.intermediate_size
    assert ref_saved - saved == silu_outputs


def test_disabled_or_unknown_mlps_keep_their_forward(tiny_decoder: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    with gated_mlps(model, False) as n:
        assert n == 0
    mlp = model.model.layers[0].mlp
    mlp.forward = mlp.forward  # an instance-level forward set by someone else
    with gated_mlps(model, True) as n:
        assert n == model.config.num_hidden_layers - 1 and "forward" in mlp.__dict__
    assert "forward" in mlp.__dict__


def _saved_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward (a tensor kept twice counts once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(storages.values())


def test_fused_lora_down_proj_keeps_the_factors_not_the_product(tiny_decoder: Path) -> None:
    """With fused LoRA layers, down_proj keeps references to gate and up (kept by the gated product anyway)
    and recomputes its input in backward: bit-identical gradients, one more product-sized tensor not kept."""
    from tuneforge.accel.fused_lora import fused_lora

    model, ids = _lora_model(tiny_decoder)
    with fused_lora(model, True):
        ref_loss, ref = loss_and_grads(model, ids)
        ref_bytes = _saved_bytes(model, ids)
        with gated_mlps(model, True):
            loss, grads = loss_and_grads(model, ids)
            saved = _saved_bytes(model, ids)
    assert torch.equal(loss, ref_loss) and grads.keys() == ref.keys() and grads
    for name, g in ref.items():
        assert torch.equal(grads[name], g), name
    product = ids.numel() * model.config.intermediate_size * 4  # float32 bytes of one (tokens, intermediate)
    assert ref_bytes - saved == 2 * model.config.num_hidden_layers * product  # the SiLU output and down's input
