"""Tokenised examples cached on disk by fingerprint, so a rerun (a resume, a sweep trial, a bench) skips encoding.

Why: rendering the chat template and tokenising every row is pure Python per row (about a
millisecond each), the same for every trial of a sweep and every rerun of a recipe. The fingerprint
is a SHA-256 over everything that decides the token ids: the examples' content (text, target,
prompt messages), the task and its fitted schema, the recipe's ``data`` and ``prompt`` sections and
``train.max_length``, the tokenizer (its full serialised vocabulary and merges, special tokens and
chat template) and the format version of this module. Anything else changing cannot change the ids,
and any of these changing gives another file. The cache is JSON (never pickle: loading a pickle
runs code), written atomically, one file per fingerprint under ``$TUNEFORGE_CACHE/encoded``
(default ``~/.cache/tuneforge/encoded``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from tuneforge.files import write_text_atomic
from tuneforge.tasks.base import Encoded, Example, Task

FORMAT_VERSION = 1


def cache_dir() -> Path:
    root = os.environ.get("TUNEFORGE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "tuneforge") / "encoded"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of what decides a tokenizer's ids: its vocabulary and rules, special tokens and chat template."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h.update(body.encode())
    h.update(json.dumps([tokenizer.special_tokens_map, tokenizer.chat_template], sort_keys=True, default=str).encode())
    return h.hexdigest()


def fingerprint(task: Task, examples: list[Example]) -> str:
    given = task.settings
    settings = {"version": FORMAT_VERSION, "task": task.name, "kind": task.model_kind, "schema": task.schema,
                "data": given.data.model_dump(mode="json") if given.data is not None else None,
                "prompt": given.prompt.model_dump(mode="json"), "max_length": given.max_length,
                "tokenizer": tokenizer_fingerprint(task.tokenizer)}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for e in examples:
        h.update(json.dumps([e.text, e.target, e.messages, e.conversation], sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def _to_json(e: Encoded) -> list[Any]:
    return [e.input_ids, e.labels, e.truncated, e.n_answer]


def encode_cached(task: Task, examples: list[Example]) -> tuple[list[Encoded], bool]:
    """``task.encode_many(examples)``, from the cache when the fingerprint is there; returns (encoded, hit)."""
    if task.settings.data is None or not task.settings.data.cache or not task.cacheable:
        return task.encode_many(examples), False
    path = cache_dir() / f"{fingerprint(task, examples)}.json"
    if path.is_file():
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            return [Encoded(input_ids=i, labels=lab, truncated=t, n_answer=n) for i, lab, t, n in rows], True
        except (ValueError, TypeError):  # a torn or foreign file: encode again and overwrite it
            pass
    encoded = task.encode_many(examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps([_to_json(e) for e in encoded], separators=(",", ":")))
    return encoded, False
