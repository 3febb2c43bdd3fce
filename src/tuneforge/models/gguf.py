"""De-quantise a GGUF checkpoint once into a plain float32 Hugging Face folder, and cache it.

Why: training needs dense float weights, and every other part of tuneforge (loading, adapters,
export) then deals with one kind of model folder. transformers reads the GGUF and unpacks every
block to float (``GgufConfig(dequantize=True)``); the result is saved as safetensors with the
tokenizer (also read from the GGUF) and a generation config.

The write is atomic: everything goes to a hidden temporary folder next to ``out_dir`` that is
renamed into place at the end, so a killed process never leaves a half folder (only a temporary
one, removed by the next run). A lock file serialises concurrent processes where ``fcntl``
exists; without it the rename still decides a single winner and the loser's copy is dropped.

What the de-quantised ``smollm2-135m-instruct`` folder holds (checked by hand with transformers
5.23: it reloads with plain ``AutoModelForCausalLM.from_pretrained(folder)`` and gives the same
logits as the GGUF-loaded model):

* tokenizer: eos ``<|im_end|>`` (id 2), pad ``<|im_end|>`` (id 2; the GGUF sets it,
  ``tokenizer.ggml.padding_token_id``), bos ``<|im_start|>`` (id 1, not added when encoding),
  unk ``<|endoftext|>`` (id 0); ``model_max_length`` 8192 (the model's context);
* chat template: SmolLM2's ChatML (``<|im_start|>role\\n...<|im_end|>\\n``); when the messages
  have no system message it inserts the default one, "You are a helpful AI assistant named
  SmolLM, trained by Hugging Face"; ``add_generation_prompt`` appends ``<|im_start|>assistant\\n``;
* ``generation_config.eos_token_id`` includes the ``<|im_end|>`` id (2); pad 2, bos 1.

If a GGUF's tokenizer has no pad token, the eos token becomes the pad token (said in the log).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from tuneforge.errors import TuneforgeError, UserError

log = logging.getLogger(__name__)

_SHA_MEMO: dict[tuple[str, int, int], str] = {}
# Written last into the temporary folder: its presence is what makes a folder complete.
ORIGIN_FILE = "tuneforge-origin.json"


def cache_dir() -> Path:
    """``$TUNEFORGE_CACHE``, or ``~/.cache/tuneforge``."""
    env = os.environ.get("TUNEFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tuneforge"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file; remembered per process for an unchanged (size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def cached_dequantised(gguf_path: Path, name: str) -> Path:
    """``cache_dir()/models/<name>-<first 12 hex of the GGUF's sha256>``, de-quantised on first use."""
    out_dir = cache_dir() / "models" / f"{name}-{file_sha256(gguf_path)[:12]}"
    if _is_complete(out_dir):
        return out_dir
    return dequantise_gguf(gguf_path, out_dir)


def dequantise_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write ``gguf_path`` as a float32 safetensors model folder at ``out_dir`` (atomically).

    Returns ``out_dir``. An existing complete ``out_dir`` is returned as is; an existing folder
    that tuneforge did not finish is refused rather than overwritten.
    """
    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise UserError(f"GGUF file {gguf_path} does not exist")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out_dir) as exclusive:
        if out_dir.exists():
            if _is_complete(out_dir):
                return out_dir
            raise UserError(f"{out_dir} exists but is not a finished de-quantised model folder; delete it and rerun")
        if exclusive:  # nobody else is writing: leftovers of killed runs can go
            for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            _write_dequantised(gguf_path, tmp)
            try:
                os.rename(tmp, out_dir)
            except OSError:
                if not _is_complete(out_dir):  # not a lost race: a real error
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


def _write_dequantised(gguf_path: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers import __version__ as transformers_version

    log.warning("de-quantising %s to float32 (once; cached in %s)", gguf_path.name, folder.parent)
    source = {"gguf_file": gguf_path.name, "local_files_only": True, "trust_remote_code": False}
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
        **source,
    )
    # transformers 5.23 drops the quantizer itself when asked to de-quantise; older versions (and
    # a plain `gguf_file=` load) keep it, and then `save_pretrained` refuses the model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    not_dense = [n for n, p in model.named_parameters() if p.dtype != torch.float32]
    if not_dense:
        raise TuneforgeError(f"de-quantising {gguf_path} left non-float32 weights: {not_dense[:3]}")

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **source)
    if tokenizer.pad_token is None:
        log.warning("%s has no pad token; using the eos token %r", gguf_path.name, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = model.config.max_position_embeddings
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    _add_chat_end_to_eos(model, tokenizer)

    model.save_pretrained(folder)  # safetensors + config.json + generation_config.json
    tokenizer.save_pretrained(folder)
    origin = {
        "gguf_file": str(gguf_path.resolve()),
        "gguf_sha256": file_sha256(gguf_path),
        "transformers": transformers_version,
        "dtype": "float32",
    }
    (folder / ORIGIN_FILE).write_text(json.dumps(origin, indent=2) + "\n", encoding="utf-8")


def _add_chat_end_to_eos(model: torch.nn.Module, tokenizer: object) -> None:
    """Make generation stop at the end of a chat turn (``<|im_end|>``) as well as at eos."""
    gen = model.generation_config
    eos = gen.eos_token_id
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    for token in ("<|im_end|>", tokenizer.eos_token):
        token_id = tokenizer.convert_tokens_to_ids(token) if token else None
        if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    gen.eos_token_id = ids[0] if len(ids) == 1 else ids
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id


def _is_complete(folder: Path) -> bool:
    return (folder / ORIGIN_FILE).is_file() and (folder / "config.json").is_file()


@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[bool]:
    """Hold an exclusive lock for ``out_dir``; yields whether the lock is real (``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the folder whole
        yield False
        return
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
