"""``tuneforge compress``: compress a finished run and measure what it cost, on the run's own test split.

The uncompressed model (the tuned model with adapters merged) and the compressed one answer the
same saved test items in the same process, one after the other, at the run's ``eval.batch_size``.
The report gives, against the uncompressed model:

* quality: the task's headline metrics with paired bootstrap 95% intervals of the change
  (``tuneforge.evaluate.report.build_report``, the uncompressed model in the "base" slot);
* latency: wall-clock milliseconds per test item of ``task.predict`` after one warm-up batch, the
  median of ``latency_repeats`` passes per model, the two models alternating so that a noisy
  neighbour on a shared machine slows both alike;
* size: bytes of the weights file, both written by the same safetensors writer (ties stored once).
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from tuneforge.compress.base import CompressConfig, Context, compress_config, float_state, get_compressor
from tuneforge.compress.store import COMPRESSION_FILE, WEIGHTS_FILE, is_compressed, save_model_folder
from tuneforge.run.splits import load_saved_split
from tuneforge.errors import UserError
from tuneforge.evaluate.report import build_report, headline_table, model_scores
from tuneforge.run.catalogue import register_finished_run
from tuneforge.run.folder import RunDir, claim_output, mark_owned, remove_owned
from tuneforge.run.loading import load_run
from tuneforge.run.model_card import write_model_card
from tuneforge.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from tuneforge.tasks.base import Example, Task


@dataclass
class CompressResult:
    out_dir: Path
    report: dict[str, Any]


def compress(run_dir: Path | str, cfg: CompressConfig | dict[str, Any], out_dir: Path | str, *,
             overwrite: bool = False, echo: Any = print) -> CompressResult:
    """Write a compressed copy of a finished run to ``out_dir`` with its own report."""
    cfg = compress_config(cfg)
    source, out = RunDir(run_dir), Path(out_dir)
    _check_paths(source, out, overwrite)
    compressor = get_compressor(cfg)
    loaded = load_run(source.root)
    task = loaded.task
    test = task.parse(load_saved_split(source.data, "test"), f"{source.data / 'test.jsonl'}")
    if not test:
        raise UserError(f"{source.root} has no test split, so compression cannot be measured")
    train = task.parse(load_saved_split(source.data, "train"), str(source.data / "train.jsonl")) \
        if cfg.recovery_steps else []
    model = loaded.method.merge(loaded.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)

    echo(f"scoring the uncompressed model on {len(test)} test items")
    reference = timed_score(task, model, test)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # tuneforge's own temporary name: a leftover of an earlier failure
    try:
        report = _compress_into(tmp, out, source, cfg, loaded, model, compressor, test, train, reference, echo)
        remove_owned(out, "compressed")  # checked again: only an earlier compressed model (or nothing) goes
        tmp.rename(out)
    except BaseException:  # an error, a full disk or an interrupt leaves no temporary folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _after_write(out)
    echo(render_compression_markdown(report))
    return CompressResult(out, report)


def _compress_into(tmp: Path, out: Path, source: RunDir, cfg: CompressConfig, loaded: Any, model: nn.Module,
                   compressor: Any, test: list[Example], train: list[Example], reference: dict[str, Any],
                   echo: Any) -> dict[str, Any]:
    """Compress ``model``, score it and write the whole folder into ``tmp``; returns the report."""
    task = loaded.task
    ref_bytes = _float_size(model, tmp / "reference.safetensors")
    uncompressed = copy.deepcopy(model) if cfg.latency_repeats > 1 else None  # kept for the timing repeats
    echo(f"compressing: {cfg.method}")
    model = compressor.apply(model, Context(loaded.recipe, task, train)).eval()
    echo(f"scoring the compressed model on {len(test)} test items")
    compressed = timed_score(task, model, test)
    if uncompressed is not None:
        echo(f"timing both models {cfg.latency_repeats - 1} more time(s)")
        _repeat_timings(task, test, [(uncompressed, reference), (model, compressed)], cfg.latency_repeats - 1)
        del uncompressed

    size = save_model_folder(model, compressor, task.tokenizer, tmp / "model")
    facts = {"config": cfg.model_dump(), "source_run": str(source.root.resolve()),
             "summary": compressor.summary(model), "quantised": compressor.quantised,
             "batch_size": loaded.recipe.eval.batch_size, "n_test": len(test),
             "size_bytes": {"uncompressed": ref_bytes, "compressed": size, "ratio": size / ref_bytes},
             "ms_per_item": {"uncompressed": reference["ms_per_item"], "compressed": compressed["ms_per_item"],
                             "ratio": compressed["ms_per_item"] / reference["ms_per_item"],
                             "runs": {"uncompressed": reference["ms_per_item_runs"],
                                      "compressed": compressed["ms_per_item_runs"]}}}
    meta = {"task": task.name, "model": loaded.recipe.model, "method": loaded.recipe.method.name,
            "base_is": "the uncompressed tuned model", "compression": facts}
    report = build_report(task, test, reference, compressed, meta=meta, samples=loaded.recipe.eval.samples,
                          metrics=loaded.recipe.eval.metrics)
    quality = {"headline": report["headline"], "uncompressed": report["base"], "compressed": report["tuned"],
               "delta": report["delta"], "intervals": report["intervals"]}
    _write_folder(source, tmp, out, {**facts, "quality": quality}, report, compressed["predictions"])
    return report


def _check_paths(source: RunDir, out: Path, overwrite: bool) -> None:
    if not source.is_complete():
        raise UserError(f"{source.root} is not a finished run (status.json must say complete and report.json "
                        "exist); finish it with `tuneforge train` first")
    if is_compressed(source.root):
        raise UserError(f"{source.root} is already a compressed model; compress the original run instead")
    if out.resolve() == source.root.resolve() or source.root.resolve() in out.resolve().parents:
        raise UserError(f"-o {out} would write inside the run being compressed; pick a folder outside it")
    if claim_output(out, kind="compressed", overwrite=overwrite) == "exists":
        raise UserError(f"{out} already holds a compressed model; pass --overwrite to replace it, "
                        "or pick another folder")


def _timed_predict(task: Task, model: nn.Module, test: list[Example]) -> tuple[list[dict[str, Any]], float]:
    started = time.perf_counter()
    predictions = task.predict(model, test)
    return predictions, 1000 * (time.perf_counter() - started) / len(test)


def timed_score(task: Task, model: nn.Module, test: list[Example]) -> dict[str, Any]:
    """Predict and score ``test``; ``ms_per_item`` times ``task.predict`` after a warm-up batch."""
    task.predict(model, test[: task.settings.eval.batch_size])  # warm-up: first-call allocations, kernel choice
    predictions, ms = _timed_predict(task, model, test)
    extra = task.extra_eval(model, test)
    return {"scores": model_scores(task, test, predictions, extra), "items": task.item_scores(test, predictions),
            "predictions": predictions, "ms_per_item": ms, "ms_per_item_runs": [ms]}


def _repeat_timings(task: Task, test: list[Example], pairs: list[tuple[nn.Module, dict[str, Any]]],
                    repeats: int) -> None:
    """More timed passes, alternating the models; ``ms_per_item`` becomes the median of all passes."""
    for _ in range(repeats):
        for model, result in pairs:
            result["ms_per_item_runs"].append(_timed_predict(task, model, test)[1])
    for _, result in pairs:
        result["ms_per_item"] = float(statistics.median(result["ms_per_item_runs"]))


def _float_size(model: nn.Module, path: Path) -> int:
    """Bytes of the uncompressed weights written as safetensors (then deleted)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, metadata = float_state(model)
    save_file(tensors, str(path), metadata=metadata)
    size = path.stat().st_size
    path.unlink()
    return size


def _write_folder(source: RunDir, tmp: Path, out: Path, facts: dict[str, Any],
                  report: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
    run = RunDir(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    mark_owned(tmp, "compressed")
    raw = yaml.safe_load(source.recipe.read_text(encoding="utf-8"))
    raw["output"] = str(out)
    write_text_atomic(run.recipe, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    shutil.copytree(source.data, run.data)
    env = json.loads(source.environment.read_text(encoding="utf-8")) if source.environment.is_file() else {}
    write_json_atomic(run.environment, env)
    write_jsonl_atomic(run.predictions / "tuned.jsonl", predictions)
    write_json_atomic(tmp / COMPRESSION_FILE, facts)
    write_json_atomic(run.report_json, report)
    write_text_atomic(run.report_md, render_compression_markdown(report))
    run.set_status("complete", compressed_from=str(source.root.resolve()))


def _after_write(out: Path) -> None:
    """Model card for the compressed folder, and the folder in the run catalogue (it can be promoted)."""
    write_model_card(out)
    register_finished_run(out)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def render_compression_markdown(report: dict[str, Any]) -> str:
    facts = report["compression"]
    rows = headline_table(report)
    rows[0] = ["metric", "uncompressed", "compressed", "change", "95% CI of change (paired bootstrap)"]
    size, ms = facts["size_bytes"], facts["ms_per_item"]
    md = [f"# tuneforge compression: {facts['config']['method']} of {report['task']} on {report['model']} "
          f"({report['method']})", "",
          f"Source run: `{facts['source_run']}`. Both models answered the run's {facts['n_test']} saved test items "
          f"at batch size {facts['batch_size']}, in one process.", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    md += ["", "| | uncompressed | compressed | ratio |", "|---|---|---|---|",
           f"| weights on disk | {_mb(size['uncompressed'])} | {_mb(size['compressed'])} | {size['ratio']:.3f} |",
           f"| latency, ms per item (median of {len(ms['runs']['compressed'])}) | {ms['uncompressed']:.1f} | "
           f"{ms['compressed']:.1f} | {ms['ratio']:.3f} |", "",
           "Details: " + json.dumps(facts["summary"]), ""]
    return "\n".join(md)


__all__ = ["CompressResult", "compress", "render_compression_markdown", "timed_score", "WEIGHTS_FILE"]
