"""Optional dependencies: which extra installs a module, and one clear message when it is missing.

The core install (``pip install tuneforge``) trains, evaluates and exports Hugging Face folders. Serving,
ONNX, differential privacy, data cleaning, sweeps, experiment trackers and QLoRA live in extras so that a
user who needs none of them does not download ~250 MB of wheels. Every optional import goes through
``require`` so the user sees ``pip install 'tuneforge[serve]'`` rather than a bare ``ModuleNotFoundError``;
the CLI maps any ``ModuleNotFoundError`` that escapes through ``missing_extra_message`` as a safety net.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tuneforge.errors import UserError

#: top-level module -> the extra that installs it (names as ``pyproject.toml``'s optional-dependencies)
EXTRA_OF: dict[str, str] = {
    "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "starlette": "serve",
    "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx",
    "opacus": "privacy",
    "ftfy": "data", "datasketch": "data", "py3langid": "data", "phonenumbers": "data", "stdnum": "data",
    "pyap": "data", "datasets": "data",
    "optuna": "sweep", "sqlalchemy": "sweep",
    "tensorboard": "tracking", "mlflow": "tracking", "wandb": "tracking", "trackio": "tracking",
    "torchao": "compress",
    "nltk": "metrics", "bert_score": "metrics",
    "bitsandbytes": "qlora",
}


class MissingExtra(UserError):
    """An optional feature was asked for without its extra installed."""


def install_hint(module: str) -> str:
    """``pip install 'tuneforge[<extra>]'`` for ``module`` (its top-level package), or a plain pip line."""
    top = module.split(".")[0]
    extra = EXTRA_OF.get(top)
    return f"pip install 'tuneforge[{extra}]'" if extra else f"pip install {top}"


def missing_extra_message(module: str, feature: str | None = None) -> str:
    """The one line a user sees when ``module`` is not installed."""
    what = f"{feature} needs" if feature else "this needs"
    return f"{what} the optional package {module.split('.')[0]!r}, which is not installed: {install_hint(module)}"


def require(module: str, feature: str | None = None) -> ModuleType:
    """Import ``module``, or raise ``MissingExtra`` naming the extra that installs it.

    Only a missing ``module`` itself (or its top-level package) becomes ``MissingExtra``; an import error
    inside an installed package is a real bug and propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or not module.startswith(err.name.split(".")[0]):
            raise
        raise MissingExtra(missing_extra_message(module, feature)) from None


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False
