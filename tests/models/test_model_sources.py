"""Models from where users keep them: hub ids from the local cache (offline), ModernBERT- and DeBERTa-shaped
encoders, `.bin` checkpoints met with the conversion line, and QLoRA refused on a machine without CUDA."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.errors import ConfigError, UserError
from tuneforge.models.loading import load_model
from tuneforge.models.resolve import resolve_model
from tuneforge.models.tiny import build_tiny_tokenizer
from tuneforge.recipe import recipe_from_dict


def _cache_model(cache: Path, repo_id: str, source: Path) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_a_hub_id_resolves_from_the_local_cache_offline(tmp_path: Path, tiny_decoder: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _cache_model(tmp_path / "hub", "acme/tiny-chat", tiny_decoder)
    resolved = resolve_model("acme/tiny-chat")  # no allow_hub: nothing is downloaded
    assert resolved.path == snapshot and resolved.kind == "decoder" and resolved.name == "acme/tiny-chat"
    assert load_model(resolved, head="causal_lm").config.model_type == "llama"
    with pytest.raises(ConfigError, match="tuneforge works offline"):
        resolve_model("acme/not-downloaded")


def test_a_cached_bin_checkpoint_gets_the_conversion_line(tmp_path: Path, tiny_decoder: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _cache_model(tmp_path / "hub", "acme/old-model", tiny_decoder)
    (snapshot / "model.safetensors").unlink()
    (snapshot / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(UserError, match=r"tuneforge never unpickles .* Convert them to safetensors once: "):
        load_model(resolve_model("acme/old-model"), head="causal_lm")


def _tiny_encoder_folder(out: Path, config: object) -> Path:
    """A 2-layer, 32-wide encoder of ``config``'s family with the tiny tokenizer, saved as safetensors."""
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = build_tiny_tokenizer(encoder=True)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # ModernBERT takes no token_type_ids
    tokenizer.save_pretrained(out)
    return out


def _modernbert(vocab: int) -> object:
    from transformers import ModernBertConfig

    return ModernBertConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=128, pad_token_id=0,
                            global_attn_every_n_layers=2, local_attention=16, reference_compile=False)


def _deberta(vocab: int) -> object:
    from transformers import DebertaV2Config

    return DebertaV2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=128, pad_token_id=0, type_vocab_size=0)


@pytest.mark.parametrize("config", [_modernbert, _deberta], ids=["modernbert", "deberta-v2"])
def test_any_sequence_classifier_trains_as_an_encoder(tmp_path: Path, config: Callable[[int], object]) -> None:
    vocab = len(build_tiny_tokenizer(encoder=True))
    folder = _tiny_encoder_folder(tmp_path / "enc", config(vocab))
    assert resolve_model(str(folder)).kind == "encoder"
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24))
    raw = base_recipe(folder, "classification", train, tmp_path / "run", epochs=1, lr=1e-3)
    raw["eval"]["base"] = False
    result = api.train(recipe_from_dict(raw), echo=lambda *a: None)
    assert result.report is not None and 0.0 <= result.report["tuned"]["accuracy"] <= 1.0
    from safetensors.torch import load_file

    before = load_model(resolve_model(str(folder)), head="sequence_classification", num_labels=2).state_dict()
    trained = load_file(result.run_dir / "model" / "trainable.safetensors")
    changed = [n for n, p in trained.items() if n in before and not torch.equal(p, before[n])]
    assert any("layers" in n or "encoder" in n for n in changed)  # the body trained, not only the head


def test_qlora_is_refused_without_cuda(tmp_path: Path, tiny_decoder: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA is allowed here")
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"say {i}", "completion": str(i)} for i in range(10)])
    raw = base_recipe(tiny_decoder, "generation", train, tmp_path / "run")
    raw["method"] = {"name": "lora", "quantize": "4bit"}
    with pytest.raises(ConfigError, match=r"method.quantize: 4bit \(QLoRA\) needs a CUDA GPU .* remove method.quantize"):
        api.train(recipe_from_dict(raw), dry_run=True, echo=lambda *a: None)
