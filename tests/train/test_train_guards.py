"""Early stopping, best-weight restore, the memory refusal and the missing-GPU warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from conftest import base_recipe, product_rows, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.errors import ResourceError
from tuneforge.recipe import EarlyStopping, TrainConfig
from tuneforge.run.folder import RunDir
from tuneforge.train.loop import fit
from tuneforge.train.preflight import resolve_device


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path: Path, tiny_decoder: Path) -> None:
    from tuneforge.data.readers import read_records
    from tuneforge.methods import get_method
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.resolve import resolve_model
    from tuneforge.methods.full import FullMethod
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.tasks.base import get_task

    train = write_jsonl(tmp_path / "train.jsonl", product_rows(16))
    recipe = recipe_from_dict(base_recipe(tiny_decoder, "extraction", train, tmp_path / "run"))
    resolved = resolve_model(str(tiny_decoder))
    task = get_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    examples = task.parse(read_records(train), "train")
    task.fit_schema(examples)
    model = load_model(resolved, head="causal_lm")
    method = get_method(FullMethod())
    snapshots: list[torch.Tensor] = []
    scores = iter([1.0, 0.5, 0.7, 0.8, 0.9, 1.0])  # best at the 2nd evaluation, then worse

    def validate(m: torch.nn.Module) -> dict[str, float]:
        snapshots.append(m.get_input_embeddings().weight.detach().clone())
        return {"loss": next(scores)}

    cfg = TrainConfig(max_steps=12, eval_every=2, lr=1e-2, batch_size=4, early_stopping=EarlyStopping(patience=2))
    state = fit(model=model, task=task, method=method, train=[task.encode(e) for e in examples], validate=validate,
                cfg=cfg, run=RunDir(tmp_path / "run"), accelerator=Accelerator(cpu=True), resume=False)
    assert state.stopped_early and state.step == 8 and state.best_step == 4
    assert torch.equal(model.get_input_embeddings().weight, snapshots[1])
    events = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["val_loss"] for e in events if e.get("event") == "validation"] == [1.0, 0.5, 0.7, 0.8]


def test_run_that_does_not_fit_in_memory_is_refused(tmp_path: Path, tiny_encoder: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tuneforge.train.preflight._available_bytes", lambda device: 1e6)
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20))
    with pytest.raises(ResourceError, match="lower train.batch_size"):
        api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run"), echo=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_asking_for_a_missing_gpu_warns_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, warnings = resolve_device(TrainConfig(device="cuda"))
    assert device == "cpu" and "no CUDA GPU" in warnings[0]


def test_eval_reproduces_the_report(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40))
    first = api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=2, lr=3e-3),
                      echo=lambda *_: None).report
    again = api.evaluate(tmp_path / "run", echo=lambda *_: None)
    assert first is not None
    for side in ("base", "tuned"):
        assert again[side]["accuracy"] == first[side]["accuracy"]
        assert again[side]["log_loss"] == pytest.approx(first[side]["log_loss"], abs=1e-6)
