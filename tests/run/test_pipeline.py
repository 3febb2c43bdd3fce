"""End to end on tiny random models: recipe -> run folder -> report, resume, export, predict, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import base_recipe, chat_rows, product_rows, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.run.folder import RunDir


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "event" not in r]


def test_classification_encoder_run_writes_a_complete_folder(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(60))
    result = api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=4, lr=3e-3),
                       echo=lambda *_: None)
    run = RunDir(result.run_dir)
    report = json.loads(run.report_json.read_text())
    for side in ("base", "tuned"):
        assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(report[side])
    assert report["tuned"]["accuracy"] >= 0.9  # separable by one word
    for metric in ("accuracy", "macro_f1"):  # per-item and corpus-level metrics both get paired intervals
        lo, hi = report["intervals"][metric]["delta"]
        assert lo <= report["delta"][metric] <= hi
    assert run.is_complete() and (run.root / "recipe.yaml").is_file() and (run.data / "test.jsonl").is_file()
    assert json.loads((run.data / "fingerprints.json").read_text())["files"]["train"]["sha256"]
    assert "torch" in json.loads(run.environment.read_text())
    trace = losses(run.root)
    assert sum(trace[-3:]) / 3 < sum(trace[:3]) / 3


def test_extraction_with_lora_reports_its_headline_metrics(tmp_path: Path, tiny_decoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(30))
    recipe = base_recipe(tiny_decoder, "extraction", train, tmp_path / "run", epochs=1)
    recipe["method"] = {"name": "lora", "r": 4, "alpha": 8}
    report = api.train(recipe, echo=lambda *_: None).report
    assert report is not None
    for key in ("json_valid", "exact_match", "field_f1"):
        assert key in report["base"] and key in report["tuned"]
    assert (Path(recipe["output"]) / "model" / "adapter" / "adapter_config.json").is_file()


def test_generation_reports_rouge_bleu_perplexity(tmp_path: Path, tiny_decoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(30))
    report = api.train(base_recipe(tiny_decoder, "generation", train, tmp_path / "run", epochs=3),
                       echo=lambda *_: None).report
    assert report is not None
    for key in ("rouge_l", "bleu", "perplexity"):
        assert key in report["base"] and key in report["tuned"]
    assert report["tuned"]["perplexity"] < report["base"]["perplexity"]
    assert report["tuned"]["bleu_signature"].startswith("nrefs:1")


def test_same_seed_same_weights(tmp_path: Path, tiny_decoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(20))
    outs = []
    for name in ("a", "b"):
        recipe = base_recipe(tiny_decoder, "extraction", train, tmp_path / name, max_steps=3, lr=1e-3)
        recipe["eval"]["base"] = False
        recipe["data"]["split"] = {"validation": 0.0, "test": 0.1}
        api.train(recipe, echo=lambda *_: None)
        outs.append(load_file(str(tmp_path / name / "model" / "trainable.safetensors")))
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch,
                                                packing: bool) -> None:
    import tuneforge.train.loop as loop

    train = write_jsonl(tmp_path / "train.jsonl", product_rows(24))

    def recipe(name: str) -> dict:
        r = base_recipe(tiny_decoder, "extraction", train, tmp_path / name, max_steps=6, eval_every=2, lr=1e-3,
                        packing=packing)
        r["eval"]["base"] = False
        r["data"]["split"] = {"validation": 0.15, "test": 0.1}
        r["train"]["keep_checkpoints"] = 1
        return r

    api.train(recipe("straight"), echo=lambda *_: None)
    real_step, calls = loop._one_step, {"n": 0}

    def dies_at_step_5(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "_one_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        api.train(recipe("killed"), echo=lambda *_: None)
    run = RunDir(tmp_path / "killed")
    assert not run.is_complete() and not run.report_json.exists()
    assert run.status()["state"] == "interrupted"
    assert [p.name for p in run.checkpoints.glob("step-*")] == ["step-000004"]
    with pytest.raises(Exception, match="unfinished run"):
        api.train(recipe("killed"), echo=lambda *_: None)
    monkeypatch.setattr(loop, "_one_step", real_step)
    api.train(recipe("killed"), resume=True, echo=lambda *_: None)
    a = load_file(str(tmp_path / "straight" / "model" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "trainable.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert losses(tmp_path / "killed")[-2:] == pytest.approx(losses(tmp_path / "straight")[-2:], abs=1e-5)


def test_nan_loss_stops_with_exit_code_3(tmp_path: Path, tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tuneforge.tasks.base import Task

    train = write_jsonl(tmp_path / "train.jsonl", product_rows(20))
    recipe = base_recipe(tiny_decoder, "extraction", train, tmp_path / "run", max_steps=3)
    recipe["eval"]["base"] = False
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    real = Task.loss

    def nan_loss(self, model, batch, **kw):  # type: ignore[no-untyped-def]
        loss, n = real(self, model, batch, **kw)
        return loss * float("nan"), n

    monkeypatch.setattr("tuneforge.tasks.extraction.Extraction.loss", nan_loss, raising=False)
    assert main(["train", str(path)]) == 3
    assert "loss became nan at step 1" in capsys.readouterr().err
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "failed" and "TrainingError" in status["error"]


def test_bad_rows_are_listed_with_lines_and_nothing_is_written(tmp_path: Path, tiny_encoder: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    train = tmp_path / "train.jsonl"
    rows = [json.dumps(r) for r in sentiment_rows(10)]
    rows[2] = '{"text": "broken json", "label": '
    rows[5] = json.dumps({"text": "   ", "label": "pos"})
    rows[7] = json.dumps({"txt": "wrong field", "label": "neg"})
    train.write_text("\n".join(rows) + "\n")
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{train}:3: malformed JSON" in err
    rows[2] = json.dumps({"text": "fine", "label": "pos"})
    train.write_text("\n".join(rows) + "\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{train}:6: empty text" in err and f"{train}:8: missing field 'text'" in err
    assert not (tmp_path / "run").exists()


def test_unknown_label_in_test_file_is_refused(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(10))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "meh", "label": "neutral"}])
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run")
    recipe["data"]["test"] = str(test)
    with pytest.raises(Exception, match=r"test.jsonl:1: unknown label 'neutral'"):
        api.train(recipe, echo=lambda *_: None)


def test_export_merges_lora_and_predict_writes_a_file(tmp_path: Path, tiny_decoder: Path) -> None:
    from transformers import AutoModelForCausalLM

    train = write_jsonl(tmp_path / "train.jsonl", product_rows(20))
    recipe = base_recipe(tiny_decoder, "extraction", train, tmp_path / "run", max_steps=4, lr=5e-3)
    recipe["method"] = {"name": "lora", "r": 4, "alpha": 8}
    recipe["eval"]["base"] = False
    api.train(recipe, echo=lambda *_: None)
    out = api.export(tmp_path / "run")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    tuned = api.load_run(tmp_path / "run").model
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.allclose(exported(ids).logits, tuned(input_ids=ids).logits, atol=1e-5)
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "Acme red mug"}, {"text": "Acme blue mug"}])
    pred_file = api.predict(tmp_path / "run", inputs)
    rows = [json.loads(x) for x in pred_file.read_text().splitlines()]
    assert len(rows) == 2 and all("prediction" in r and r["text"] for r in rows)


def test_dry_run_trains_nothing_and_writes_nothing(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20))
    seen: list[str] = []
    result = api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run"), dry_run=True,
                       echo=seen.append)
    assert not (tmp_path / "run").exists() and result.report is None
    text = "\n".join(seen)
    assert "trainable" in text and "peak memory" in text and "tokens/s" in text and "task: classification" in text


def test_resume_refuses_changed_data(tmp_path: Path, tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tuneforge.train.loop as loop
    from tuneforge.errors import UserError

    train = write_jsonl(tmp_path / "train.jsonl", product_rows(16))
    recipe = base_recipe(tiny_decoder, "extraction", train, tmp_path / "run", max_steps=4, eval_every=1)
    recipe["eval"]["base"] = False

    def dies(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_one_step", dies)
    with pytest.raises(KeyboardInterrupt):
        api.train(recipe, echo=lambda *_: None)
    write_jsonl(train, product_rows(17))
    with pytest.raises(UserError, match="data changed since the run started"):
        api.train(recipe, resume=True, echo=lambda *_: None)
