"""Base models: the registry of named models, resolving a name or folder, GGUF de-quantising, loading.

``tuneforge.models.tiny`` (test models) is not re-exported. The loading and GGUF functions are
imported on first use, so that listing the registry does not pay for importing transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tuneforge.models.resolve import MODELS, ModelSpec, ResolvedModel, detect_kind, resolve_model

if TYPE_CHECKING:
    from tuneforge.models.gguf import cache_dir as cache_dir, dequantise_gguf as dequantise_gguf
    from tuneforge.models.loading import HEADS as HEADS, load_model as load_model, load_tokenizer as load_tokenizer

_LAZY = {
    "cache_dir": "tuneforge.models.gguf",
    "dequantise_gguf": "tuneforge.models.gguf",
    "HEADS": "tuneforge.models.loading",
    "load_model": "tuneforge.models.loading",
    "load_tokenizer": "tuneforge.models.loading",
}

__all__ = ["MODELS", "ModelSpec", "ResolvedModel", "detect_kind", "resolve_model", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
