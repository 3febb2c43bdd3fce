"""``tuneforge export``: a standalone model folder that needs no tuneforge to load.

The HF format (safetensors, adapters merged) is written here; GGUF and ONNX are dispatched to
:mod:`tuneforge.deploy.formats`. Every format gets the run's MODEL_CARD.md and a ``tuneforge.json``
naming the task, schema, base model and method, and replaces its output folder atomically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from tuneforge.deploy.formats import export_as
from tuneforge.errors import UserError
from tuneforge.evaluate.golden import run_cases
from tuneforge.files import write_json_atomic
from tuneforge.run.folder import RunDir, claim_output, remove_owned
from tuneforge.run.loading import Loaded, load_run, open_run
from tuneforge.run.model_card import write_model_card


def export(run_dir: Path | str, out_dir: Path | str | None = None, *, overwrite: bool = False,
           force: bool = False, format: str = "hf", **options: Any) -> Path:
    """A standalone model folder that needs no tuneforge to load, with the run's MODEL_CARD.md.

    ``format``: ``hf`` (safetensors, adapters merged), ``gguf`` (llama-architecture decoders) or
    ``onnx`` (classifiers); see :mod:`tuneforge.deploy.formats`. A model that fails the recipe's golden
    cases (``eval.golden``) is refused unless ``force``.
    """
    run, _ = open_run(run_dir)
    out = Path(out_dir) if out_dir else run.root / "export"
    if claim_output(out, kind="export", overwrite=overwrite) == "exists":
        raise UserError(f"{out} already holds an export; pass --overwrite to replace it, or pick another folder")
    compression = run.root / "compression.json"
    if compression.is_file() and json.loads(compression.read_text(encoding="utf-8"))["quantised"]:
        raise UserError(f"{run.root} holds weights quantised in torch's own layout, which no export format stores; "
                        "export the uncompressed run (GGUF has its own --gguf-type q8_0), or use this folder itself "
                        "(`tuneforge predict` loads it)")
    if format != "hf":
        try:
            return export_as(format, run_dir, out, **options)
        except UserError:
            raise  # a failed reproduction check keeps its attempt for inspection; its message names the folder
        except BaseException:  # the exporters build in ".NAME.tmp" beside the output; a crash leaves none behind
            shutil.rmtree(out.with_name(f".{out.name}.tmp"), ignore_errors=True)
            raise
    loaded = load_run(run_dir)
    if loaded.recipe.eval.golden and not force:
        failed = [r for r in run_cases(loaded.task, loaded.model, loaded.recipe.eval.golden) if not r["passed"]]
        if failed:
            lines = [f"{r['case']}: {'; '.join(r['failures'])} (answer: {r['answer'][:80]!r})" for r in failed]
            raise UserError(f"{run.root}: the tuned model fails {len(failed)} golden case(s) of eval.golden, so it "
                            "is not exported; fix the model or pass --force:\n  " + "\n  ".join(lines))
    merged = loaded.method.merge(loaded.model)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # tuneforge's own temporary name: a leftover of an earlier failure
    try:
        write_export(run, loaded, merged, tmp)
        remove_owned(out, "export")  # checked again: only an earlier export (or nothing) is replaced
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_export(run: RunDir, loaded: Loaded, merged: nn.Module, tmp: Path) -> None:
    """The merged HF model, its tokenizer, ``tuneforge.json`` and the model card, into ``tmp``."""
    merged.save_pretrained(tmp, safe_serialization=True)
    loaded.task.tokenizer.save_pretrained(tmp)
    write_json_atomic(tmp / "tuneforge.json", {"task": loaded.task.name, "schema": loaded.task.schema,
                                                "base_model": loaded.recipe.model, "method": loaded.recipe.method.name})
    write_model_card(run.root, tmp / "MODEL_CARD.md")
