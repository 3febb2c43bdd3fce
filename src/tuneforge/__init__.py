"""tuneforge: from a pre-trained language model and your own data to a fine-tuned, honestly evaluated model.

The public API lives in ``tuneforge.api`` (``train``, ``evaluate``, ``predict``, ``export``, ``list_models``);
it is imported lazily so that ``import tuneforge`` stays cheap.
"""

from __future__ import annotations

from typing import Any

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
