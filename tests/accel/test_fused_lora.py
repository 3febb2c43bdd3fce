"""Fused LoRA layers compute peft's forward and gradients; a bf16 frozen base is given back bit-identical."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from transformers import AutoModelForCausalLM

from conftest import base_recipe, loss_and_grads, product_rows, write_jsonl
from tuneforge.data.readers import read_records
from tuneforge.errors import ConfigError
from tuneforge.methods import get_method
from tuneforge.accel.frozen_base import (LowPrecisionLinear, frozen_base_in, frozen_input_grad, frozen_linear,
                                           frozen_lora_bases)
from tuneforge.accel.fused_lora import FusedLoraLinear, fused_lora
from tuneforge.accel.lora_dropout import fold_lora_dropout
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import TrainConfig, recipe_from_dict
from tuneforge.run.folder import RunDir
from tuneforge.tasks.base import get_task
from tuneforge.infer import precision
from tuneforge.train import preflight
from tuneforge.train.loop import fit


def _peft(tiny_decoder: Path, dropout: float, **extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                        init_lora_weights=False, **extra)  # B != 0, so the adapter's path matters
    model = get_peft_model(model, config)
    fold_lora_dropout(model)
    return model


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_matches_peft_forward_and_gradients(tiny_decoder: Path, dropout: float) -> None:
    model = _peft(tiny_decoder, dropout)
    model.train()
    ids = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(0))
    ref_loss, ref = loss_and_grads(model, ids)
    with fused_lora(model, True) as n:
        assert n == sum(1 for m in model.modules() if isinstance(m, FusedLoraLinear)) > 0
        loss, grads = loss_and_grads(model, ids)
    assert not any(isinstance(m, FusedLoraLinear) for m in model.modules())  # peft's class again
    assert grads.keys() == ref.keys() and all("lora_" in k for k in grads)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name, g in ref.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_fused_eval_and_merged_adapters_give_peft_outputs(tiny_decoder: Path) -> None:
    model = _peft(tiny_decoder, 0.1)
    model.eval()
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(2))
    ref = model(input_ids=ids).logits
    with fused_lora(model, True):
        torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():  # not covered by the fused path: peft's own forward
            plain = model(input_ids=ids).logits
        assert not torch.allclose(plain, ref)


def test_dora_is_left_to_peft(tiny_decoder: Path) -> None:
    model = _peft(tiny_decoder, 0.0, use_dora=True)
    model.train()
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(3))
    ref_loss, _ = loss_and_grads(model, ids)
    with fused_lora(model, True):
        layer = next(m for m in model.modules() if isinstance(m, FusedLoraLinear))
        assert layer._fused_plan(torch.zeros(1, layer.in_features), (), {}) is None
        loss, _ = loss_and_grads(model, ids)
    assert torch.equal(loss, ref_loss)


def test_bf16_frozen_base_trains_close_and_is_restored_bit_identical(tiny_decoder: Path, tmp_path: Path) -> None:
    model = _peft(tiny_decoder, 0.0)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ids = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(0))
    ref_loss, ref = loss_and_grads(model, ids)
    with fused_lora(model, True), frozen_base_in(model, torch.bfloat16, tmp_path) as n:
        bases = frozen_lora_bases(model)
        assert n > 0 and not bases  # every frozen LoRA base is now a LowPrecisionLinear
        low = [m for m in model.modules() if isinstance(m, LowPrecisionLinear)]
        assert len(low) == n and all(m.weight.dtype == torch.bfloat16 for m in low)
        assert len(list(tmp_path.iterdir())) == 1  # the float32 weights, spilled to disk
        loss, grads = loss_and_grads(model, ids)
        assert all(g.dtype == torch.float32 for g in grads.values())
    assert list(tmp_path.iterdir()) == []
    assert not any(isinstance(m, LowPrecisionLinear) for m in model.modules())
    after = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert after.keys() == before.keys()
    for name, w in before.items():
        assert after[name].dtype == torch.float32 and torch.equal(after[name], w), name
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=0)  # bf16 rounding of the frozen products only
    for name, g in ref.items():
        rel = float((grads[name] - g).norm() / g.norm())
        assert rel < 0.05, (name, rel)


def test_frozen_base_is_restored_when_training_fails(tiny_decoder: Path, tmp_path: Path) -> None:
    model = _peft(tiny_decoder, 0.0)
    weight = frozen_lora_bases(model)[0].weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), frozen_base_in(model, torch.bfloat16, tmp_path):
        raise RuntimeError("boom")
    assert torch.equal(frozen_lora_bases(model)[0].weight, weight) and list(tmp_path.iterdir()) == []


def test_peft_path_still_runs_on_a_bf16_base(tiny_decoder: Path, tmp_path: Path) -> None:
    """Anything the fused path leaves to peft (here: fusion off) still works with the low-precision base."""
    model = _peft(tiny_decoder, 0.1)
    model.eval()
    ids = torch.randint(0, 100, (1, 7), generator=torch.Generator().manual_seed(4))
    ref = model(input_ids=ids).logits
    with frozen_base_in(model, torch.bfloat16, tmp_path):
        assert all(type(m) is LoraLinear for m in model.modules() if isinstance(m, LoraLinear))
        out = model(input_ids=ids).logits
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)


def _lora_setup(tmp_path: Path, model_dir: Path, **train_cfg: object) -> tuple[Any, Any, list, torch.nn.Module, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(16))
    raw = base_recipe(model_dir, "extraction", train, tmp_path / "run", max_steps=4, lr=1e-2, **train_cfg)
    raw["method"] = {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.1}
    recipe = recipe_from_dict(raw)
    resolved = resolve_model(str(model_dir))
    task = get_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    examples = task.parse(read_records(train), "train")
    task.fit_schema(examples)
    torch.manual_seed(0)
    method = get_method(recipe.method)
    model = method.prepare(load_model(resolved, head=task.head), task.head)
    return recipe, task, [task.encode(e) for e in examples], model, method


def _fit_lora(tmp_path: Path, model_dir: Path, **train_cfg: object) -> tuple[dict, torch.nn.Module, list[float]]:
    recipe, task, encoded, model, method = _lora_setup(tmp_path, model_dir, **train_cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit(model=model, task=task, method=method, train=encoded, validate=None,
        cfg=recipe.train, run=RunDir(tmp_path / "run"), accelerator=Accelerator(cpu=True), resume=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return before, model, losses


def test_the_preflight_probe_measures_the_training_forms(tmp_path: Path, tiny_decoder: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    recipe, task, encoded, model, _ = _lora_setup(tmp_path, tiny_decoder, frozen_dtype="bfloat16")
    seen: list[tuple[bool, bool]] = []
    loss = task.loss

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((any(isinstance(m, FusedLoraLinear) for m in model.modules()),
                     any(isinstance(m, LowPrecisionLinear) for m in model.modules())))
        return loss(*args, **kwargs)

    monkeypatch.setattr(task, "loss", spy)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokens_per_s, _ = preflight.probe(model, task, encoded, recipe.train, "cpu", nullcontext)
    assert tokens_per_s > 0 and seen == [(True, True), (True, True)]
    assert not any(isinstance(m, (FusedLoraLinear, LowPrecisionLinear)) for m in model.modules())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_training_on_a_bf16_base_changes_only_the_adapter_and_tracks_float32(
        tmp_path: Path, tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)  # tiny products: fine on any CPU
    _, _, ref_losses = _fit_lora(tmp_path / "fp32", tiny_decoder, frozen_dtype="float32")
    before, model, losses = _fit_lora(tmp_path / "bf16", tiny_decoder, frozen_dtype="bfloat16")
    after = dict(model.named_parameters())
    for name, w in before.items():
        if "lora_" in name:
            assert not torch.equal(after[name], w), f"{name} should have trained"
        else:
            assert after[name].dtype == w.dtype and torch.equal(after[name], w), f"{name} must come back bit-identical"
    assert not list((tmp_path / "bf16" / "run").glob(".frozen-base-*"))  # the spill file is gone
    assert not any(isinstance(m, (LowPrecisionLinear, FusedLoraLinear)) for m in model.modules())
    assert losses[0] == pytest.approx(ref_losses[0], rel=0.02)  # first step: rounding only
    assert losses[-1] == pytest.approx(ref_losses[-1], rel=0.1)


def test_auto_frozen_dtype_is_bf16_on_amx_cpus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig()
    assert cfg.speed.frozen_dtype == "auto" and cfg.speed.fused_lora
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})
    assert preflight.resolve_frozen_dtype(cfg, "cpu") is torch.bfloat16
    assert preflight.resolve_frozen_dtype(cfg, "cuda") is None  # autocast already multiplies in bf16 there
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert preflight.resolve_frozen_dtype(cfg, "cpu") is None
    assert preflight.resolve_frozen_dtype(TrainConfig(frozen_dtype="float32"), "cpu") is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    with pytest.raises(ConfigError, match="frozen_dtype bfloat16 on this CPU"):
        preflight.resolve_frozen_dtype(TrainConfig(frozen_dtype="bfloat16"), "cpu")


def test_rows_of_low_precision_products_are_padded_and_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, w, b=None: seen.append(x.shape[0]) or real(x, w, b))
    x = torch.randn(70, 8)
    w = torch.randn(5, 8).to(torch.bfloat16)
    out = frozen_linear(x, w, None)
    assert seen == [128] and out.shape == (70, 5) and out.dtype == torch.float32
    assert frozen_linear(x[:9], w, None).shape == (9, 5) and seen[-1] == 9  # a decoding batch: exact
    torch.testing.assert_close(out, x.to(torch.bfloat16).float() @ w.float().t(), rtol=1e-2, atol=1e-2)
    g = torch.randn(70, 5)
    torch.testing.assert_close(frozen_input_grad(g, w), g.to(torch.bfloat16).float() @ w.float(), rtol=1e-2, atol=1e-2)


def test_release_file_pages_drops_only_unshared_file_backed_pages(tmp_path: Path) -> None:
    import mmap

    import numpy as np

    from tuneforge.accel.frozen_base import release_file_pages

    page = mmap.PAGESIZE
    data = np.arange(16 * page // 4, dtype=np.float32)
    (tmp_path / "w.bin").write_bytes(data.tobytes())
    mapped = torch.from_numpy(np.memmap(tmp_path / "w.bin", dtype=np.float32, mode="c"))  # private file mapping
    first, second = mapped[: 8 * page // 4], mapped[8 * page // 4:]
    assert float(first.sum()) > 0  # touch the pages
    assert release_file_pages([first], keep=[second]) == 8 * page
    assert release_file_pages([first], keep=[mapped]) == 0  # overlapped by a tensor still in use
    assert release_file_pages([torch.ones(4 * page)], keep=[]) == 0  # anonymous memory: freed with its tensor
    assert torch.equal(first, torch.from_numpy(data[: 8 * page // 4]))  # a later read fetches the file again


def test_a_killed_runs_spill_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from tuneforge.accel.frozen_base import SPILL_PREFIX, remove_stale_spills

    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{SPILL_PREFIX}{host}-{int(gone.stdout)}-abc123"
    live = tmp_path / f"{SPILL_PREFIX}{host}-{os.getpid()}-def456"
    other_host = tmp_path / f"{SPILL_PREFIX}elsewhere-{int(gone.stdout)}-ghi789"
    for folder in (dead, live, other_host):
        folder.mkdir()
        (folder / "base.bin").write_bytes(b"\0" * 16)
    assert remove_stale_spills(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other_host.exists()


def test_cast_rows_once_reuses_a_cast_only_for_the_same_unchanged_tensor() -> None:
    from tuneforge.accel.frozen_base import cast_rows_once, forget_cast

    x = torch.randn(3, 5, 8)
    first = cast_rows_once(x, torch.bfloat16)
    assert first.shape == (15, 8) and torch.equal(first, x.reshape(15, 8).to(torch.bfloat16))
    assert cast_rows_once(x, torch.bfloat16) is first  # q, then k and v: one cast
    assert cast_rows_once(x.clone(), torch.bfloat16) is not first  # equal values, another tensor
    y = x.clone()
    kept = cast_rows_once(y, torch.bfloat16)
    y.add_(1.0)  # changed in place since: cast again
    again = cast_rows_once(y, torch.bfloat16)
    assert again is not kept and torch.equal(again, y.reshape(15, 8).to(torch.bfloat16))
    forget_cast()
    assert cast_rows_once(y, torch.bfloat16) is not again


def _seen(hits: list[bool], value: bool) -> bool:
    hits.append(value)
    return value


def test_compacted_layers_keep_the_products_bf16_rows_with_the_same_gradients(
        tiny_decoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under compact_activations a fused layer saves the bf16 rows it cast for the frozen product instead of
    the float32 input, which the packer would round to the same bf16 numbers: gradients are bit-identical."""
    from tuneforge.accel import fused_lora as fused_module
    from tuneforge.accel.compact_activations import compact_saved_activations, rounds_when_saved as real

    model = _peft(tiny_decoder, 0.1)
    model.train()
    ids = torch.randint(0, 100, (2, 80), generator=torch.Generator().manual_seed(0))  # 160 rows: padded to 192
    runs, hits = [], []
    with frozen_base_in(model, torch.bfloat16, tmp_path), fused_lora(model, True), \
            compact_saved_activations(model, True):
        for shares in (True, False):
            monkeypatch.setattr(fused_module, "rounds_when_saved", lambda t, s=shares: s and _seen(hits, real(t)))
            runs.append(loss_and_grads(model, ids))
    (loss, grads), (ref_loss, ref) = runs
    assert hits and all(hits)  # every layer's rows were big enough to be rounded, so shared its bf16 copy
    assert real(torch.zeros(160, model.config.hidden_size)) is False  # outside a block's forward: never
    assert torch.equal(loss, ref_loss) and grads.keys() == ref.keys() and grads
    for name, g in ref.items():
        assert torch.equal(grads[name], g), name


def test_bf16_frozen_layer_compiles_without_the_shared_cast() -> None:
    """torch.compile traces a bf16 frozen layer (``train.compile`` with LoRA on an AMX CPU): the shared-cast
    cache is skipped there, so dynamo has no identity-keyed state to guard on, and the output is eager's."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 16)
    layer.weight = torch.nn.Parameter(layer.weight.detach().to(torch.bfloat16), requires_grad=False)
    layer.bias = torch.nn.Parameter(layer.bias.detach().to(torch.bfloat16), requires_grad=False)
    layer.__class__ = LowPrecisionLinear
    x = torch.randn(3, 70, 32)
    eager = layer(x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="eager", fullgraph=True)(x)
    assert compiled.dtype == torch.float32
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
