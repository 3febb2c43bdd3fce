"""Speed and memory features on a tiny Llama: the chunked loss and packing change no number, only the cost."""

from __future__ import annotations

from pathlib import Path

from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import base_recipe, write_jsonl
from tuneforge.tasks.packing import collate_packed, pack_rows
from tuneforge.data.readers import read_records
from tuneforge.methods import get_method
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import TrainConfig, recipe_from_dict
from tuneforge.tasks.base import IGNORE, Encoded, Task, causal_loss_sum, collate_causal, get_task, pad_id
from tuneforge.accel.fused_loss import linear_cross_entropy_sum


# ----------------------------------------------------------------------------- the fused function alone
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_cross_entropy_matches_the_plain_loss_and_gradients(smoothing: float, bias: bool) -> None:
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=bias)
    hidden = torch.randn(23, 16, requires_grad=True)  # 23 positions: chunks of 5 leave a ragged last one
    targets = torch.randint(0, 50, (23,))
    plain = nn.functional.cross_entropy(head(hidden), targets, reduction="sum", label_smoothing=smoothing)
    plain_grads = torch.autograd.grad(plain * 0.7, [hidden, *head.parameters()])
    fused = linear_cross_entropy_sum(hidden, head, targets, chunk=5, label_smoothing=smoothing)
    fused_grads = torch.autograd.grad(fused * 0.7, [hidden, *head.parameters()])
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_wrapped_head_goes_through_checkpointed_chunks() -> None:
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(16, 50))  # not a plain nn.Linear: the generic path
    hidden = torch.randn(11, 16, requires_grad=True)
    targets = torch.randint(0, 50, (11,))
    plain = nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    fused = linear_cross_entropy_sum(hidden, head, targets, chunk=4)
    torch.testing.assert_close(torch.autograd.grad(fused, hidden)[0], torch.autograd.grad(plain, hidden)[0])


# ----------------------------------------------------------------------------- on a tiny Llama
def varied_chat_rows(n: int) -> list[dict]:
    """Chat rows of clearly different lengths (1 to 4 repeats of the request and answer)."""
    colours = ["red", "blue", "green", "black"]
    return [{"messages": [{"role": "user", "content": " ".join([f"say {colours[i % 4]}"] * (1 + i % 4))},
                          {"role": "assistant", "content": " ".join([f"{colours[i % 4]} it is"] * (1 + i % 3))}]}
            for i in range(n)]


def _setup(tmp_path: Path, tiny_decoder: Path, method: dict, **train: object) -> tuple[Task, nn.Module, list]:
    data = write_jsonl(tmp_path / "train.jsonl", varied_chat_rows(12))
    raw = base_recipe(tiny_decoder, "generation", data, tmp_path / "run", **train)
    raw["method"] = method
    recipe = recipe_from_dict(raw)
    resolved = resolve_model(str(tiny_decoder))
    task = get_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    examples = task.parse(read_records(data), "train")
    task.fit_schema(examples)
    model = get_method(recipe.method).prepare(load_model(resolved, head="causal_lm"), "causal_lm")
    if method["name"] == "lora":  # B starts at zero: move it so the adapter is not an identity
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    return task, model, [task.encode(e) for e in examples]


def _loss_and_grads(model: nn.Module, batch: dict, chunk: int | None, smoothing: float = 0.0) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    loss, n = causal_loss_sum(model, batch, label_smoothing=smoothing, chunk=chunk)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0}],
                         ids=["full", "lora"])
def test_chunked_loss_equals_the_plain_loss_on_a_model(tmp_path: Path, tiny_decoder: Path, method: dict) -> None:
    task, model, encoded = _setup(tmp_path, tiny_decoder, method)
    batch = collate_causal(encoded[:4], pad_id(task.tokenizer))
    for smoothing in (0.0, 0.1):
        plain, plain_grads = _loss_and_grads(model, batch, None, smoothing)
        chunked, chunked_grads = _loss_and_grads(model, batch, 7, smoothing)
        assert chunked == pytest.approx(plain, rel=1e-6)
        assert plain_grads.keys() == chunked_grads.keys() and plain_grads
        for k in plain_grads:
            torch.testing.assert_close(chunked_grads[k], plain_grads[k], rtol=1e-5, atol=5e-6)
    if method["name"] == "full":  # the tied embedding/head weight gets both of its gradients
        assert any("embed_tokens" in k for k in chunked_grads)
    assert type(model.get_output_embeddings()) is nn.Linear  # the head was put back


def test_pack_rows_first_fit_decreasing() -> None:
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    assert pack_rows([8, 1], 8) == [[0], [1]]
    with pytest.raises(ValueError, match="more than the row width"):
        pack_rows([9], 8)


def test_packed_batch_gives_each_example_its_unpacked_loss(tmp_path: Path, tiny_decoder: Path) -> None:
    task, model, encoded = _setup(tmp_path, tiny_decoder, {"name": "full"})
    model.eval()
    batch = encoded[:6]
    lengths = [len(e.input_ids) for e in batch]
    assert len(set(lengths)) > 1  # mixed lengths, or the test proves little
    packed = collate_packed(batch, pad_id(task.tokenizer), max_tokens=2 * max(lengths))
    assert packed["input_ids"].shape[0] < len(batch)  # it did pack
    assert "attention_mask" not in packed
    with torch.no_grad():
        # (R, W, V)
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        col = {}
        for r, row in enumerate(pack_rows(lengths, 2 * max(lengths))):
            start = 0
            for i in row:
                col[i] = (r, start)
                start += lengths[i]
        for i, e in enumerate(batch):
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]  # (T, V)
            r, s = col[i]
            torch.testing.assert_close(logits[r, s : s + lengths[i]], alone, rtol=1e-5, atol=1e-5)
        plain_sum, plain_n = causal_loss_sum(model, collate_causal(batch, pad_id(task.tokenizer)))
        packed_sum, packed_n = causal_loss_sum(model, packed, chunk=5)
    assert packed_n == plain_n == sum(e.n_answer for e in batch)
    assert float(packed_sum) == pytest.approx(float(plain_sum), rel=1e-5)
    assert int((packed["labels"] != IGNORE).sum()) == plain_n  # no label across a seam


def test_packing_is_refused_for_an_encoder(tmp_path: Path, tiny_encoder: Path) -> None:
    from conftest import sentiment_rows
    from tuneforge.errors import ConfigError

    data = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(8))
    recipe = recipe_from_dict(base_recipe(tiny_encoder, "classification", data, tmp_path / "run", packing=True))
    with pytest.raises(ConfigError, match="packing"):
        get_task(recipe, load_tokenizer(tiny_encoder), "encoder")


# ----------------------------------------------------------------------------- the encoding cache
def test_encoded_examples_are_cached_by_fingerprint(tmp_path: Path, tiny_decoder: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneforge.tasks.encode_cache import cache_dir, encode_cached

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    task, _, _ = _setup(tmp_path, tiny_decoder, {"name": "full"})
    examples = task.parse(read_records(tmp_path / "train.jsonl"), "train")
    first, hit = encode_cached(task, examples)
    assert not hit and len(list(cache_dir().glob("*.json"))) == 1
    assert not any(f.suffix in (".pkl", ".pt") for f in cache_dir().iterdir())

    def no_encoding(*_: object) -> None:
        raise AssertionError("a cache hit must not tokenise")

    monkeypatch.setattr(task, "encode_many", no_encoding)
    again, hit = encode_cached(task, examples)
    assert hit and [(e.input_ids, e.labels, e.n_answer) for e in again] == \
        [(e.input_ids, e.labels, e.n_answer) for e in first]
    monkeypatch.undo()
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    # each of these decides the token ids, so each must miss
    task.configure(replace(task.settings, max_length=32))
    shorter, hit = encode_cached(task, examples)
    assert not hit and max(len(e.input_ids) for e in shorter) <= 32
    task.configure(replace(task.settings, max_length=64))
    examples[0].messages[-1]["content"] += " please"
    assert not encode_cached(task, examples)[1]
    task.tokenizer.chat_template = task.tokenizer.chat_template.replace("<|im_start|>system", "<|im_start|>sys")
    assert not encode_cached(task, examples)[1]
    assert len(list(cache_dir().glob("*.json"))) == 4


# ----------------------------------------------------------------------------- GPU-path options on the CPU
def test_bf16_is_refused_on_a_cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneforge.errors import ConfigError
    from tuneforge.recipe import TrainConfig
    from tuneforge.infer import precision
    from tuneforge.train import preflight

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ConfigError, match="25x slower"):
        preflight.resolve_precision(TrainConfig(dtype="bfloat16"), "cpu")
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert preflight.resolve_precision(TrainConfig(dtype="bfloat16"), "cpu")[0] == "bf16"
    assert preflight.resolve_precision(TrainConfig(dtype="auto"), "cpu")[0] == "no"


def test_attention_kernel_comes_from_the_recipe(tiny_decoder: Path) -> None:
    resolved = resolve_model(str(tiny_decoder))
    assert load_model(resolved, head="causal_lm").config._attn_implementation == "sdpa"
    assert load_model(resolved, head="causal_lm", attn_implementation="eager").config._attn_implementation == "eager"


def test_compiled_blocks_give_the_same_loss(tmp_path: Path, tiny_decoder: Path) -> None:
    import shutil

    from tuneforge.train.loop import compile_blocks

    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    task, model, encoded = _setup(tmp_path, tiny_decoder, {"name": "full"})
    batch = collate_packed(encoded[:4], pad_id(task.tokenizer), max_tokens=128)
    eager, eager_grads = _loss_and_grads(model, batch, 16)
    compile_blocks(model)
    compiled, compiled_grads = _loss_and_grads(model, batch, 16)
    assert compiled == pytest.approx(eager, rel=1e-5)
    for k in eager_grads:
        torch.testing.assert_close(compiled_grads[k], eager_grads[k], rtol=1e-4, atol=1e-5)


def test_pack_width_sets_the_row_width(tmp_path: Path, tiny_decoder: Path) -> None:
    task, _, encoded = _setup(tmp_path, tiny_decoder, {"name": "full"}, packing=True, max_length=64,
                              pack_width=6 * 64)
    batch = encoded[:6]
    packed = task.collate(batch)
    assert packed["input_ids"].shape == (1, sum(len(e.input_ids) for e in batch))  # one row, no padding


def test_pack_width_below_max_length_is_refused() -> None:
    with pytest.raises(ValueError, match="pack_width"):
        TrainConfig(max_length=128, pack_width=64)


def test_packed_attention_matches_the_masked_square(tmp_path: Path, tiny_decoder: Path) -> None:
    from tuneforge.accel import packed_attention as pa

    task, model, encoded = _setup(tmp_path, tiny_decoder, {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0})
    batch = encoded[:5]
    packed = collate_packed(batch, pad_id(task.tokenizer), max_tokens=3 * max(len(e.input_ids) for e in batch))
    assert pa.segment_lengths(packed["position_ids"]) is not None  # it is packed: several examples per row
    model.train()
    results = []
    for enabled in (False, True):
        with pa.packed_attention(model, enabled):
            assert model.config._attn_implementation == (pa.NAME if enabled else "sdpa")
            loss, _ = _loss_and_grads(model, packed, None)
            results.append(loss)
            if enabled:  # the layers really went example by example
                assert pa._last[1] == pa.segment_lengths(packed["position_ids"])
            grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
            results.append(grads)
    assert model.config._attn_implementation == "sdpa"  # restored
    assert results[2] == pytest.approx(results[0], rel=1e-5)
    for k, g in results[1].items():
        torch.testing.assert_close(results[3][k], g, rtol=1e-4, atol=1e-5)


def test_packed_attention_falls_back_outside_packed_training() -> None:
    from tuneforge.accel.packed_attention import segment_lengths

    assert segment_lengths(torch.tensor([[0, 1, 2, 3]])) is None  # one example per row
    assert segment_lengths(torch.tensor([[1, 2, 3]])) is None  # a continuation (KV cache), not a packed row
    assert segment_lengths(torch.tensor([[0, 1, 3]])) is None  # not consecutive
    assert segment_lengths(torch.tensor([[0, 1, 0], [0, 0, 1]])) == [[2, 1], [1, 2]]


def test_token_budget_micro_batches_give_the_same_update(tmp_path: Path, tiny_decoder: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-splitting a step's examples by tokens changes the micro-batches, not the optimizer step."""
    from conftest import base_recipe, product_rows, write_jsonl
    from tuneforge import api
    from tuneforge.train import loop

    splits: list[list[list[int]]] = []
    real = loop.split_by_tokens
    monkeypatch.setattr(loop, "split_by_tokens", lambda *a: splits.append(real(*a)) or splits[-1])
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(24))
    weights = {}
    for name, extra in (("examples", {}), ("tokens", {"micro_batch_tokens": 96})):
        raw = base_recipe(tiny_decoder, "extraction", train, tmp_path / name, max_steps=2, lr=1e-2, batch_size=2,
                          grad_accum=3, packing=True, max_length=64, **extra)
        raw["eval"]["base"] = False
        api.train(raw, echo=lambda *_: None)
        weights[name] = {k: v.detach().clone() for k, v in api.load_run(tmp_path / name).model.state_dict().items()}
    assert len(splits) == 2 and any(len(s) != 3 for s in splits)  # the steps really were cut differently
    for k, v in weights["examples"].items():
        torch.testing.assert_close(weights["tokens"][k], v, rtol=1e-4, atol=1e-5)


def test_micro_batch_tokens_below_max_length_is_refused() -> None:
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        TrainConfig(max_length=128, micro_batch_tokens=64)


def test_loop_docstring_examples() -> None:
    import doctest

    from tuneforge.train import loop

    assert doctest.testmod(loop).failed == 0


def test_preflight_probes_the_largest_token_capped_micro_batch() -> None:
    from tuneforge.train.loop import split_by_tokens
    from tuneforge.train.preflight import worst_micro_batch

    lengths = [30, 64, 10, 50, 64, 20, 5, 40]
    train = [Encoded(list(range(n)), list(range(n)), n_answer=1) for n in lengths]
    cfg = TrainConfig(max_length=64, batch_size=4, grad_accum=2, micro_batch_tokens=100)
    probed = [len(e.input_ids) for e in worst_micro_batch(train, cfg)]
    first_bin = split_by_tokens(list(range(8)), lengths, 100)[0]
    assert probed == [lengths[i] for i in first_bin] == [64, 30, 5]
    worst = worst_micro_batch(train, TrainConfig(max_length=64, batch_size=3))
    assert [len(e.input_ids) for e in worst] == [64, 64, 50]
