"""Compression on tiny runs: every method writes a folder that reloads to the same model, and is measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deploy_fixtures import cls_run, ext_run, quiet  # noqa: F401  (fixtures)
from tuneforge import api
from tuneforge.cli import main
from tuneforge.compress import COMPRESSORS, is_compressed
from tuneforge.run.compress import compress
from tuneforge.compress.prune import block_linears
from tuneforge.run.splits import load_saved_split
from tuneforge.errors import UserError

METHODS = ["int8-dynamic", "weight-int8", "weight-int4", "prune-magnitude", "prune-structured"]


def saved_probabilities(folder: Path) -> list[dict[str, float]]:
    return [json.loads(x)["probabilities"] for x in (folder / "predictions" / "tuned.jsonl").read_text().splitlines()]


def test_every_registered_method_is_offered() -> None:
    from tuneforge.compress.base import get_compressor, CompressConfig

    get_compressor(CompressConfig(method="int8-dynamic"))  # registers the built-ins
    assert sorted(COMPRESSORS.names()) == sorted(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_compressed_folder_reloads_to_the_model_that_was_measured(method: str, cls_run: Path, tmp_path: Path) -> None:
    out = compress(cls_run, {"method": method, "sparsity": 0.5}, tmp_path / "c", echo=quiet).out_dir
    assert is_compressed(out) and not is_compressed(cls_run)
    report = json.loads((out / "report.json").read_text())
    facts = json.loads((out / "compression.json").read_text())
    assert report["base_is"] == "the uncompressed tuned model"
    for metric in report["headline"]:  # quality change with a paired interval that contains it
        lo, hi = report["intervals"][metric]["delta"]
        assert lo - 1e-9 <= report["delta"][metric] <= hi + 1e-9
    assert facts["size_bytes"]["compressed"] == (out / "model" / "trainable.safetensors").stat().st_size
    assert facts["ms_per_item"]["uncompressed"] > 0 and facts["ms_per_item"]["compressed"] > 0
    # reloading through the ordinary API gives exactly the predictions measured at compression time
    loaded = api.load_run(out)
    test = loaded.task.parse(load_saved_split(out / "data", "test"), "t")
    again = [p["probabilities"] for p in loaded.task.predict(loaded.model, test)]
    for a, b in zip(again, saved_probabilities(out)):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a)
    assert (out / "MODEL_CARD.md").is_file() and "Compression" in (out / "MODEL_CARD.md").read_text()
    assert (out / "report.md").read_text().startswith("# tuneforge compression")


def test_int8_dynamic_quantises_every_linear_and_shrinks_the_weights(cls_run: Path, tmp_path: Path) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    out = compress(cls_run, {"method": "int8-dynamic"}, tmp_path / "c", echo=quiet).out_dir
    model = api.load_run(out).model
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert sum(isinstance(m, DynamicLinear) for m in model.modules()) == 14  # 2 blocks x 6 + pooler + classifier
    facts = json.loads((out / "compression.json").read_text())
    assert facts["size_bytes"]["ratio"] < 0.85  # the tiny model is embedding-heavy; linears are 4x smaller
    stored = load_file(str(out / "model" / "trainable.safetensors"))
    assert stored["classifier.qweight"].dtype == torch.int8


def test_structured_pruning_removes_ffn_neurons_and_loads_from_its_own_config(cls_run: Path, tmp_path: Path) -> None:
    out = compress(cls_run, {"method": "prune-structured", "sparsity": 0.5}, tmp_path / "c", echo=quiet).out_dir
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["intermediate_size"] == 32  # 64 neurons, half removed
    model = api.load_run(out).model
    assert model.bert.encoder.layer[0].intermediate.dense.weight.shape == (32, 32)
    assert model.bert.encoder.layer[1].output.dense.weight.shape == (32, 32)
    assert json.loads((out / "compression.json").read_text())["size_bytes"]["ratio"] < 1


def test_magnitude_pruning_zeroes_the_share_asked_and_keeps_embeddings(cls_run: Path, tmp_path: Path) -> None:
    out = compress(cls_run, {"method": "prune-magnitude", "sparsity": 0.4}, tmp_path / "c", echo=quiet).out_dir
    pruned, original = api.load_run(out).model, api.load_run(cls_run).model
    pairs = block_linears(pruned)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in pairs) / sum(m.weight.numel() for m, _ in pairs)
    assert abs(zeros - 0.4) < 0.01
    assert torch.equal(pruned.bert.embeddings.word_embeddings.weight, original.bert.embeddings.word_embeddings.weight)


def test_recovery_fine_tune_trains_the_kept_weights_and_keeps_pruned_ones_at_zero(cls_run: Path, tmp_path: Path) -> None:
    plain = compress(cls_run, {"method": "prune-magnitude", "sparsity": 0.5}, tmp_path / "a", echo=quiet).out_dir
    tuned = compress(cls_run, {"method": "prune-magnitude", "sparsity": 0.5, "recovery_steps": 3, "recovery_lr": 1e-3},
                     tmp_path / "b", echo=quiet).out_dir
    a, b = api.load_run(plain).model, api.load_run(tuned).model
    wa = torch.cat([m.weight.flatten() for m, _ in block_linears(a)])
    wb = torch.cat([m.weight.flatten() for m, _ in block_linears(b)])
    assert torch.equal(wa == 0, wb == 0)  # the same weights pruned, still zero after training
    assert not torch.allclose(wa, wb)  # and the kept ones moved
    recovery = json.loads((tuned / "compression.json").read_text())["summary"]["recovery"]
    assert recovery["steps"] == 3


def test_decoder_lora_run_compresses_after_merging_and_reloads(ext_run: Path, tmp_path: Path) -> None:
    out = compress(ext_run, {"method": "int8-dynamic"}, tmp_path / "c", echo=quiet).out_dir
    saved = [json.loads(x)["raw"] for x in (out / "predictions" / "tuned.jsonl").read_text().splitlines()]
    loaded = api.load_run(out)
    test = loaded.task.parse(load_saved_split(out / "data", "test"), "t")
    assert [p["raw"] for p in loaded.task.predict(loaded.model, test)] == saved
    assert json.loads((out / "report.json").read_text())["headline"] == ["json_valid", "exact_match", "field_f1"]


def test_refuses_unfinished_runs_outputs_inside_the_run_and_existing_folders(cls_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="inside the run"):
        compress(cls_run, {"method": "int8-dynamic"}, cls_run / "int8", echo=quiet)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(UserError, match="did not write"):
        compress(cls_run, {"method": "int8-dynamic"}, busy, echo=quiet, overwrite=True)
    assert (busy / "x").read_text() == "x"  # a folder tuneforge did not write is never replaced
    unfinished = tmp_path / "unfinished"
    shutil.copytree(cls_run, unfinished)
    (unfinished / "status.json").write_text('{"state": "running"}')
    with pytest.raises(UserError, match="not a finished run"):
        compress(unfinished, {"method": "int8-dynamic"}, tmp_path / "o", echo=quiet)


def test_cli_compress_and_bad_options(cls_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", str(cls_run), "--method", "weight-int8", "-o", str(tmp_path / "w8")]) == 0
    assert "compressed run folder" in capsys.readouterr().out
    assert main(["compress", str(cls_run), "--method", "prune-magnitude", "--sparsity", "1.5",
                 "-o", str(tmp_path / "x")]) == 2
    assert "sparsity" in capsys.readouterr().err


def test_structured_pruning_of_a_gated_llama_ffn(ext_run: Path, tmp_path: Path) -> None:
    out = compress(ext_run, {"method": "prune-structured", "sparsity": 0.25}, tmp_path / "c", echo=quiet).out_dir
    mlp = api.load_run(out).model.model.layers[1].mlp
    assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (48, 32)  # 64 neurons, a quarter removed
    assert mlp.down_proj.weight.shape == (32, 48)
    saved = [json.loads(x)["raw"] for x in (out / "predictions" / "tuned.jsonl").read_text().splitlines()]
    loaded = api.load_run(out)
    test = loaded.task.parse(load_saved_split(out / "data", "test"), "t")
    assert [p["raw"] for p in loaded.task.predict(loaded.model, test)] == saved
