"""tuneforge: from a pre-trained language model and your own data to a fine-tuned, honestly evaluated model.

The public API lives in ``tuneforge.api`` (``train``, ``evaluate``, ``predict``, ``export``, ``list_models``);
it is imported lazily so that ``import tuneforge`` stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any

# transformers imports torchao (when installed) as soon as any model code loads. torchao 0.18 on a
# CPU-only torch logs that its CUDA kernels cannot load, and torch logs a deprecation about torchao's
# enums; both are harmless here and would otherwise open every command's output. Only these two
# loggers are quieted, and only below ERROR.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "predict", "export", "list_models", "load_recipe", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load_recipe":
        from tuneforge.recipe import load_recipe

        return load_recipe
    if name in __all__:
        from tuneforge import api

        return getattr(api, name)
    raise AttributeError(name)
