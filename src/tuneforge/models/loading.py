"""Load a resolved model folder as a tokenizer and a model with the head a task needs.

Safety: weights load only from safetensors (``use_safetensors=True``) and no code from a model
folder ever runs (``trust_remote_code=False``). A folder with only pickled weights
(``pytorch_model.bin``, ``*.pt``) is refused: unpickling runs arbitrary code. Everything loads
with ``local_files_only=True``: a resolved model is always a local folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tuneforge.errors import ConfigError, UserError
from tuneforge.models.registry import ResolvedModel

_PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, with a pad token guaranteed.

    A missing pad token becomes the eos token (or unk): batching needs one, and masking makes its
    identity irrelevant. ``padding_side`` is left as saved; decoder callers set it themselves.
    """
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
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


def check_safetensors(folder: Path) -> None:
    """Refuse a folder without safetensors weights, naming the pickled files it has instead."""
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file():
        return
    pickled = sorted(p.name for pattern in _PICKLED for p in folder.glob(pattern))
    if pickled:
        raise UserError(
            f"{folder} has only pickled weights ({', '.join(pickled)}); tuneforge never unpickles (it can run "
            "arbitrary code). Convert them to safetensors in an environment you trust, e.g. "
            "`AutoModel.from_pretrained(folder).save_pretrained(folder)`, or use a model published as safetensors"
        )
    raise UserError(f"{folder} has no model weights (*.safetensors)")


def load_model(
    resolved: ResolvedModel,
    *,
    head: str,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """The model in ``resolved.path`` with a ``causal_lm`` or ``sequence_classification`` head.

    A classification head on a bare encoder (MiniLM's folder holds a plain ``BertModel``) is new
    and randomly initialised; transformers says so in a warning. ``config.pad_token_id`` is set
    from the tokenizer when missing: sequence classification on a decoder needs it to find the
    last real token of each row.
    """
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; known: {', '.join(sorted(HEADS))}")
    auto_class, head_kwargs = HEADS[head]
    extra = head_kwargs(resolved, num_labels, id2label)
    check_safetensors(resolved.path)
    model = auto_class.from_pretrained(
        resolved.path,
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=False,
        local_files_only=True,
        attn_implementation=attn_implementation,
        **extra,
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(resolved.path).pad_token_id
    if model.can_generate() and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.pad_token_id
    return model
