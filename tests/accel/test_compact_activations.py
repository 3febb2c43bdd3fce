"""Saved activations in bf16 inside the blocks: same forward, close gradients, attention kept float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import base_recipe, product_rows, write_jsonl
from test_speed import _loss_and_grads, _setup
from tuneforge import api
from tuneforge.recipe import TrainConfig
from tuneforge.tasks.base import collate_packed, pad_id
from tuneforge.accel import compact_activations as ca
from tuneforge.accel.packed_attention import packed_attention


@pytest.fixture(autouse=True)
def _pack_small_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ca, "MIN_ELEMENTS", 1)  # the tiny model's tensors are all small


def test_forward_is_unchanged_and_gradients_stay_close(tmp_path: Path, tiny_decoder: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    task, model, encoded = _setup(tmp_path, tiny_decoder, {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0})
    batch = collate_packed(encoded[:4], pad_id(task.tokenizer), max_tokens=4 * 64)
    model.train()
    with packed_attention(model, True):
        plain, plain_grads = _loss_and_grads(model, batch, None)
        packed: list[torch.Tensor] = []
        real_pack = ca._Packer.pack
        monkeypatch.setattr(ca._Packer, "pack", lambda self, t: packed.append(t) or real_pack(self, t))
        with ca.compact_saved_activations(model, True):
            compact, compact_grads = _loss_and_grads(model, batch, None)
    assert compact == plain  # the forward computes in float32 as before
    assert plain_grads.keys() == compact_grads.keys() and plain_grads
    for k in plain_grads:  # bf16 keeps 8 bits of mantissa: each gradient within a few per cent overall
        assert float((compact_grads[k] - plain_grads[k]).norm()) <= 0.03 * float(plain_grads[k].norm()) + 1e-6, k
    assert any(t.dtype == torch.float32 for t in packed), "the blocks saved something in bf16"
    # attention's (B, H, T, D) query, key, value and output never reached the packer (the rotary tables may)
    assert not any(t.dim() == 4 and t.requires_grad for t in packed)
    assert any(not torch.equal(compact_grads[k], plain_grads[k]) for k in plain_grads)  # it really rounded


def test_a_tensor_saved_by_several_layers_is_rounded_once(tmp_path: Path, tiny_decoder: Path) -> None:
    _, model, _ = _setup(tmp_path, tiny_decoder, {"name": "full"})
    packer = ca._Packer(model)
    x = torch.randn(3, 8)
    assert packer.pack(x) is packer.pack(x)  # q, k and v share one rounded copy of their input
    weight = next(model.parameters())
    assert packer.pack(weight) is weight  # weights are never copied
    assert packer.unpack(packer.pack(x)).dtype == torch.float32
    bf16 = torch.randn(3, 8).to(torch.bfloat16)
    assert packer.unpack(packer.pack(bf16)) is bf16  # already bf16: kept, never up-cast


def test_hooks_are_removed_and_eval_is_untouched(tmp_path: Path, tiny_decoder: Path) -> None:
    task, model, encoded = _setup(tmp_path, tiny_decoder, {"name": "full"})
    blocks = ca._blocks(model)
    before = [len(b._forward_pre_hooks) for b in blocks]
    with ca.compact_saved_activations(model, True):
        assert [len(b._forward_pre_hooks) for b in blocks] == [n + 1 for n in before]
        model.eval()
        with torch.no_grad():
            model(**{k: v for k, v in collate_packed(encoded[:2], pad_id(task.tokenizer), 128).items()
                     if k in ("input_ids", "position_ids")})
        assert ca._depth == 0
    assert [len(b._forward_pre_hooks) for b in blocks] == before


def test_compact_training_end_to_end(tmp_path: Path, tiny_decoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(16))
    raw = base_recipe(tiny_decoder, "extraction", train, tmp_path / "run", max_steps=3, packing=True,
                      compact_activations=True)
    raw["method"] = {"name": "lora", "r": 4, "alpha": 8}
    report = api.train(raw, echo=lambda *_: None).report
    assert report is not None and report["training"]["steps"] == 3


def test_compact_with_checkpointing_is_refused() -> None:
    with pytest.raises(ValueError, match="compact_activations"):
        TrainConfig(compact_activations=True, gradient_checkpointing=True)
