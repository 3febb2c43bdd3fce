"""Export formats besides the Hugging Face folder: GGUF for llama decoders, ONNX for classifiers.

Each exporter writes a folder with the model file, ``tuneforge.json`` (task, schema, base model)
and ``MODEL_CARD.md``, and *checks its own output* before the folder is moved into place: the
exported file is loaded back with an independent reader and its outputs are compared with the
PyTorch model's on the run's own test inputs. The comparison is saved as ``export_check.json``
and the export fails when it is outside the tolerance of its weight type.

* **GGUF** (``llama.cpp``'s format) through the ``gguf`` package's ``GGUFWriter``. The package has
  no Hugging Face converter (llama.cpp's ``convert_hf_to_gguf.py`` is a script outside it), so the
  llama tensor names, the rotary q/k row permutation llama.cpp expects (the same permutation
  ``transformers`` undoes on load) and the BPE tokenizer metadata are written here. Weight types:
  ``f32``, ``f16`` and ``q8_0`` (``gguf.quants.quantize``); norms stay f32 as llama.cpp keeps them.
  Checked by loading it back with ``transformers`` (``from_pretrained(dir, gguf_file=...)``).
* **ONNX** through ``torch.onnx.export`` (the torch.export-based exporter, dynamic batch and
  sequence axes), checked with ``onnxruntime``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tuneforge.errors import UserError
from tuneforge.registry import Registry
from tuneforge.run.folder import remove_owned
from tuneforge.run.loading import load_run
from tuneforge.run.model_card import write_model_card
from tuneforge.run.splits import load_saved_split
from tuneforge.files import write_json_atomic

EXPORTERS: Registry[Callable[..., Path]] = Registry("export format")

#: per GGUF weight type: largest |logit difference| accepted, relative to the largest |logit| of the
#: PyTorch model, and the least share of positions whose greedy next token must be the same
GGUF_TOLERANCE = {"f32": 1e-5, "f16": 1e-2, "q8_0": 5e-2}
GGUF_AGREEMENT = {"f32": 1.0, "f16": 0.99, "q8_0": 0.95}
ONNX_TOLERANCE = 1e-3
CHECK_ITEMS = 8


def export_as(fmt: str, run_dir: Path | str, out: Path, **options: Any) -> Path:
    """Dispatch ``tuneforge export --format FMT``; ``out`` is replaced atomically."""
    return EXPORTERS.get(fmt)(run_dir, Path(out), **options)


def _check_inputs(run_dir: Path | str, loaded: Any, n: int = CHECK_ITEMS) -> list[str]:
    """Texts the check runs on: the model's own prompts for the run's first test items."""
    task = loaded.task
    examples = task.parse(load_saved_split(Path(run_dir) / "data", "test"), "the test split")[:n]
    if task.head == "sequence_classification":
        return [e.text for e in examples]
    return [task.tokenizer.decode(task.encode(e).input_ids) for e in examples]  # chat-templated prompt + answer


def _finish(run_dir: Path | str, loaded: Any, tmp: Path, out: Path, extra: dict[str, Any]) -> Path:
    write_json_atomic(tmp / "tuneforge.json", {"task": loaded.task.name, "schema": loaded.task.schema,
                                               "base_model": loaded.recipe.model,
                                               "method": loaded.recipe.method.name, **extra})
    write_model_card(run_dir, tmp / "MODEL_CARD.md")
    remove_owned(out, "export")  # only an earlier export (or nothing) is replaced
    tmp.rename(out)
    return out


def _fresh_tmp(out: Path) -> Path:
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _merged(run_dir: Path | str) -> tuple[Any, nn.Module]:
    loaded = load_run(run_dir)  # quantised compressed folders were refused by deploy.export
    model = loaded.method.merge(loaded.model).eval()
    return loaded, model


# ----------------------------------------------------------------------------- GGUF
def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for q/k projections (interleaved rotary halves); transformers undoes it on load.

    ``weight`` is ``(n_head * head_dim, hidden)``; within each head the rows ``[0..d/2) , [d/2..d)`` are
    interleaved pairwise.
    """
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _gguf_name(hf_name: str) -> str:
    import re

    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf_name in fixed:
        return fixed[hf_name]
    per_block = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", hf_name)
    if m is None or m.group(2) not in per_block:
        raise UserError(f"GGUF export: no llama.cpp name for tensor {hf_name!r}; only plain llama models export")
    return f"blk.{m.group(1)}.{per_block[m.group(2)]}.{m.group(3)}"


def _tokenizer_metadata(writer: Any, tokenizer: Any) -> None:
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend["model"]["type"] != "BPE":
        raise UserError(f"GGUF export supports byte-level BPE tokenizers; this one is {backend['model']['type']}")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = {t["id"] for t in backend.get("added_tokens", []) if t.get("special")}
    added = {t["id"] for t in backend.get("added_tokens", [])}
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in added
             else gguf.TokenType.NORMAL for i in range(len(tokens))]
    merges = [" ".join(m) if isinstance(m, list) else m for m in backend["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(int(token_id))
    writer.add_add_bos_token(False)
    if isinstance(tokenizer.chat_template, str):
        writer.add_chat_template(tokenizer.chat_template)


def write_llama_gguf(model: nn.Module, tokenizer: Any, path: Path, gguf_type: str = "f16") -> None:
    """Write a llama-architecture ``*ForCausalLM`` as one GGUF file."""
    import gguf

    cfg = model.config
    if cfg.model_type != "llama":
        raise UserError(f"GGUF export supports llama-architecture decoders; this model is {cfg.model_type!r}")
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[gguf_type]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(Path(str(getattr(cfg, "_name_or_path", "")) or "tuneforge-model").name or "tuneforge-model")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if getattr(cfg, "rope_parameters", None)
                              else float(cfg.rope_theta))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(file_type)
    _tokenizer_metadata(writer, tokenizer)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        data = tensor.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            data = permute_qk(data, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = permute_qk(data, cfg.num_key_value_heads)
        gname = _gguf_name(name)
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gname, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16 or data.shape[-1] % 32:  # q8_0 blocks are 32 wide
            writer.add_tensor(gname, data.astype(np.float16))
        else:
            writer.add_tensor(gname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@torch.no_grad()
def check_gguf(folder: Path, filename: str, model: nn.Module, tokenizer: Any, texts: list[str],
               gguf_type: str) -> dict[str, Any]:
    """Load the GGUF back with transformers and compare next-token logits with ``model`` on ``texts``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # the folder is this export's own (GGUF, no pickle); no code from it runs either way
    back = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32,
                                                trust_remote_code=False, local_files_only=True).eval()
    back_tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename, trust_remote_code=False,
                                             local_files_only=True)
    worst, scale, agree, positions, same_ids = 0.0, 0.0, 0, 0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
        same_ids += int(back_tok(text, add_special_tokens=False)["input_ids"] == ids[0].tolist())
        ref, got = model(input_ids=ids).logits[0], back(input_ids=ids).logits[0]  # (T, V)
        worst, scale = max(worst, float((ref - got).abs().max())), max(scale, float(ref.abs().max()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        positions += ids.shape[1]
    check = {"reader": "transformers from_pretrained(gguf_file=...)", "gguf_type": gguf_type, "items": len(texts),
             "max_abs_logit_diff": worst, "max_abs_logit": scale, "relative_diff": worst / max(scale, 1e-12),
             "relative_tolerance": GGUF_TOLERANCE[gguf_type], "positions": positions,
             "same_greedy_token": agree / positions, "least_agreement": GGUF_AGREEMENT[gguf_type],
             "items_tokenized_identically": same_ids}
    check["passed"] = (check["relative_diff"] <= GGUF_TOLERANCE[gguf_type] and same_ids == len(texts)
                       and check["same_greedy_token"] >= GGUF_AGREEMENT[gguf_type])
    return check


@EXPORTERS.register("gguf")
def export_gguf(run_dir: Path | str, out: Path, *, gguf_type: str = "f16") -> Path:
    if gguf_type not in GGUF_TOLERANCE:
        raise UserError(f"unknown GGUF weight type {gguf_type!r}; use one of {', '.join(GGUF_TOLERANCE)}")
    loaded, model = _merged(run_dir)
    if loaded.task.head != "causal_lm":
        raise UserError("GGUF export needs a decoder run (causal LM head); this run has a classification head: "
                        "use --format onnx")
    tmp = _fresh_tmp(out)
    filename = f"model-{gguf_type}.gguf"
    write_llama_gguf(model, loaded.task.tokenizer, tmp / filename, gguf_type)
    check = check_gguf(tmp, filename, model, loaded.task.tokenizer, _check_inputs(run_dir, loaded), gguf_type)
    write_json_atomic(tmp / "export_check.json", check)
    if not check["passed"]:
        raise UserError(f"the GGUF export does not reproduce the model: {json.dumps(check)}; nothing was written "
                        f"to {out} (the attempt is in {tmp})")
    return _finish(run_dir, loaded, tmp, out, {"format": "gguf", "file": filename})


# ----------------------------------------------------------------------------- ONNX
class _Logits(nn.Module):
    """Positional inputs in a fixed order -> logits, so the ONNX graph has named inputs and one output."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits  # (B, num_labels)


@torch.no_grad()
def check_onnx(path: Path, model: nn.Module, tokenizer: Any, texts: list[str], names: list[str]) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    ref = model(**{n: batch[n] for n in names}).logits.numpy()  # (B, num_labels)
    got = session.run(["logits"], {n: batch[n].numpy() for n in names})[0]
    worst = float(np.abs(ref - got).max())
    same = int((ref.argmax(-1) == got.argmax(-1)).sum())
    return {"reader": f"onnxruntime {ort.__version__} (CPUExecutionProvider)", "items": len(texts),
            "max_abs_logit_diff": worst, "tolerance": ONNX_TOLERANCE, "items_with_same_label": same,
            "passed": worst <= ONNX_TOLERANCE and same == len(texts)}


@EXPORTERS.register("onnx")
def export_onnx(run_dir: Path | str, out: Path) -> Path:
    loaded, model = _merged(run_dir)
    if loaded.task.head != "sequence_classification":
        raise UserError("ONNX export is for classifiers with a classification head (an encoder run such as "
                        "minilm-l6); decoders export as GGUF: --format gguf")
    tokenizer = loaded.task.tokenizer
    texts = _check_inputs(run_dir, loaded)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    example = tokenizer(texts[:2], padding=True, return_tensors="pt")
    tmp = _fresh_tmp(out)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(_Logits(model, names).eval(), tuple(example[n] for n in names), str(tmp / "model.onnx"),
                      input_names=names, output_names=["logits"], dynamo=True, external_data=False,
                      dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),))  # one spec for *inputs
    tokenizer.save_pretrained(tmp)
    check = check_onnx(tmp / "model.onnx", model, tokenizer, texts, names)
    write_json_atomic(tmp / "export_check.json", check)
    if not check["passed"]:
        raise UserError(f"the ONNX export does not reproduce the model: {json.dumps(check)}; nothing was written "
                        f"to {out} (the attempt is in {tmp})")
    labels = loaded.task.schema.get("labels", [])
    return _finish(run_dir, loaded, tmp, out, {"format": "onnx", "file": "model.onnx",
                                                     "inputs": names, "id2label": dict(enumerate(labels))})
