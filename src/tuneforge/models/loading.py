"""Load a resolved model folder as a tokenizer and a model with the head a task needs.

Safety by construction: every model, tokenizer and embedder folder tuneforge opens passes
:func:`check_safe_folder` first, and then loads with ``SAFE_LOAD`` (``use_safetensors=True``,
``trust_remote_code=False``, ``local_files_only=True``; a tokenizer with the last two). The gate refuses what transformers could
otherwise unpickle or run: pickled weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``)
without the safetensors weights that replace them, an index file whose ``weight_map`` names
anything but safetensors shards in the folder, an ``auto_map`` (custom code) in ``config.json`` or
``tokenizer_config.json``, and a PEFT ``adapter_config.json`` (transformers would load another
base model and the adapter's own weights file). Checking the folder ourselves, rather than
relying on torch's ``weights_only`` default, keeps the promise when a library default changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tuneforge.errors import ConfigError, UserError
from tuneforge.models.resolve import ResolvedModel, custom_code_refusal, read_json_object

log = logging.getLogger("tuneforge")

PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
#: keyword arguments of every ``from_pretrained`` in tuneforge: no remote code, no network ...
NO_CODE: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
#: ... and, for weights, no pickle (a tokenizer would keep ``use_safetensors`` as an init argument and save it)
SAFE_LOAD: dict[str, Any] = {**NO_CODE, "use_safetensors": True}
_CODE_CONFIGS = ("config.json", "tokenizer_config.json")


def _refuse_custom_code(folder: Path) -> None:
    for name in _CODE_CONFIGS:
        if (folder / name).is_file() and "auto_map" in read_json_object(folder / name):
            raise UserError(custom_code_refusal(folder / name))
    if (folder / "adapter_config.json").is_file():
        raise UserError(
            f"{folder} holds a PEFT adapter (adapter_config.json), which would make transformers load another "
            "base model and the adapter's own weights; give a full model folder instead (merge the adapter with "
            "peft's merge_and_unload() and save_pretrained(), or use `tuneforge export` on a tuneforge run)"
        )


def _check_index(index: Path) -> None:
    """Every shard an index names is a safetensors file beside it: no pickle, no path out of the folder."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise UserError(f"{index} has no weight_map object; is it a Hugging Face index file?")
    shards = sorted({str(v) for v in weight_map.values()})
    bad = [s for s in shards if not s.endswith(".safetensors") or Path(s).name != s or s.startswith(".")]
    if bad:
        raise UserError(
            f"{index} names weights that are not safetensors files in {index.parent} ({', '.join(bad[:5])}"
            f"{', ...' if len(bad) > 5 else ''}); tuneforge never unpickles (it can run arbitrary code). "
            "Delete this index if the folder's safetensors weights are complete, or convert the model: "
            + _conversion_hint(index.parent)
        )
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise UserError(f"{index} names shards missing from {index.parent}: {', '.join(missing[:5])}; "
                        "copy the whole model folder again")


def _conversion_hint(folder: Path) -> str:
    """A one-line command that rewrites a pickled model as safetensors, to run where the file is trusted."""
    config = folder / "config.json"
    archs = read_json_object(config).get("architectures") if config.is_file() else None
    cls = archs[0] if isinstance(archs, list) and archs and str(archs[0]).isidentifier() else "AutoModel"
    out = f"{folder}-safetensors"
    return (f"python -c \"import transformers as t; f, o = {str(folder)!r}, {out!r}; "
            f"t.{cls}.from_pretrained(f).save_pretrained(o, safe_serialization=True); "
            f"t.AutoTokenizer.from_pretrained(f).save_pretrained(o)\" (run it only where you trust the file), "
            f"then use {out}")


def check_safe_folder(folder: Path, *, weights: bool = True) -> None:
    """Refuse a model folder transformers could unpickle or run code from; see the module docstring.

    ``weights=False`` is for a tokenizer-only folder: custom code is still refused, weights are not
    needed. Pickled files beside ``model.safetensors`` (or a safetensors index) are left alone:
    with ``use_safetensors=True`` transformers never opens them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a model folder")
    _refuse_custom_code(folder)
    for index in sorted(folder.glob("*.index.json")):
        _check_index(index)
    if not weights or (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return
    pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
    if pickled:
        raise UserError(
            f"{folder} has only pickled weights ({', '.join(pickled[:5])}{', ...' if len(pickled) > 5 else ''}); "
            "tuneforge never unpickles (it can run arbitrary code). Convert them to safetensors once: "
            + _conversion_hint(folder) + "; or use a model published as safetensors"
        )
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    raise UserError(f"{folder} has no model weights (model.safetensors or model.safetensors.index.json)"
                    + (f"; found only {', '.join(found[:5])}" if found else ""))


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, with a pad token guaranteed.

    A missing pad token becomes the eos token (or unk): batching needs one, and masking makes its
    identity irrelevant. ``padding_side`` is left as saved; decoder callers set it themselves.
    """
    check_safe_folder(path, weights=False)
    tokenizer = AutoTokenizer.from_pretrained(path, **NO_CODE)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UserError(f"the tokenizer in {path} has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback
    return tokenizer


def _causal_lm(resolved: ResolvedModel, num_labels: int | None, id2label: dict[int, str] | None) -> dict[str, object]:
    if resolved.kind != "decoder":
        raise ConfigError(f"model {resolved.name!r} is an {resolved.kind}; a causal_lm head needs a decoder")
    if num_labels is not None or id2label is not None:
        raise ConfigError("num_labels / id2label apply only to the sequence_classification head")
    return {}


def _sequence_classification(
    resolved: ResolvedModel, num_labels: int | None, id2label: dict[int, str] | None
) -> dict[str, object]:
    if id2label is not None:
        if sorted(id2label) != list(range(len(id2label))):
            raise ConfigError(f"id2label keys must be 0..{len(id2label) - 1}, got {sorted(id2label)}")
        if num_labels is not None and num_labels != len(id2label):
            raise ConfigError(f"num_labels={num_labels} but id2label has {len(id2label)} labels")
        num_labels = len(id2label)
    if num_labels is None or num_labels < 1:
        raise ConfigError("the sequence_classification head needs num_labels >= 1 (or id2label)")
    id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    return {
        "num_labels": num_labels,
        "id2label": dict(id2label),
        "label2id": {label: i for i, label in id2label.items()},
    }


# head name -> (Auto class, check the arguments and return the extra config kwargs)
HEADS: dict[str, tuple[type, Callable[..., dict[str, object]]]] = {
    "causal_lm": (AutoModelForCausalLM, _causal_lm),
    "sequence_classification": (AutoModelForSequenceClassification, _sequence_classification),
}


def supported_attention(auto_class: Any, path: Path, wanted: str) -> str:
    """``wanted``, or ``eager`` where the model's class has no SDPA kernel (DeBERTa): the same maths, slower,
    instead of transformers' refusal to load."""
    if wanted != "sdpa":
        return wanted
    config = AutoConfig.from_pretrained(path, **NO_CODE)
    model_class = auto_class._model_mapping.get(type(config), None)
    if model_class is not None and not model_class._supports_sdpa:
        log.info("%s has no SDPA attention: using eager attention", model_class.__name__)
        return "eager"
    return wanted


def load_model(
    resolved: ResolvedModel,
    *,
    head: str,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    **options: Any,
) -> PreTrainedModel:
    """The model in ``resolved.path`` with a ``causal_lm`` or ``sequence_classification`` head.

    A classification head on a bare encoder (MiniLM's folder holds a plain ``BertModel``) is new
    and randomly initialised; transformers says so in a warning. ``config.pad_token_id`` is set
    from the tokenizer when missing: sequence classification on a decoder needs it to find the
    last real token of each row. ``options`` are the method's own ``from_pretrained`` arguments
    (QLoRA's quantisation config).
    """
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; known: {', '.join(sorted(HEADS))}")
    auto_class, head_kwargs = HEADS[head]
    extra = head_kwargs(resolved, num_labels, id2label)
    check_safe_folder(resolved.path)
    attention = supported_attention(auto_class, resolved.path, attn_implementation)
    model = auto_class.from_pretrained(
        resolved.path, dtype=dtype, attn_implementation=attention, **SAFE_LOAD, **extra, **options
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(resolved.path).pad_token_id
    if model.can_generate() and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.pad_token_id
    return model


def load_encoder(path: Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """An encoder folder's tokenizer and bare body (no head), in eval mode: the embedders' loader."""
    check_safe_folder(path)
    return load_tokenizer(path), AutoModel.from_pretrained(path, **SAFE_LOAD).eval()
