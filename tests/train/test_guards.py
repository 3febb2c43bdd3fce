"""Regularisers and guards around the loop: label smoothing, dropout, smaller students, distillation,
DP-SGD, EWC, rehearsal and the forgetting measurement, on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from conftest import base_recipe, product_rows, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.models.loading import load_model
from tuneforge.models.resolve import resolve_model
from tuneforge.models.surgery import keep_layers, set_dropout
from tuneforge.recipe import EWCConfig, ForgettingConfig, PrivacyConfig, recipe_from_dict
from tuneforge.tasks.base import Encoded, causal_loss_sum, collate_causal
from tuneforge.train import forgetting
from tuneforge.train.ewc import ewc_penalty
from tuneforge.tasks.distillation import distillation_loss_sum
from tuneforge.train.privacy import plan_privacy, private_step, spent

QUIET = {"echo": lambda *_: None}


def test_label_smoothing_matches_torch(tiny_decoder: Path) -> None:
    model = load_model(resolve_model(str(tiny_decoder)), head="causal_lm")
    batch = collate_causal([Encoded([3, 4, 5, 6, 7], [-100, -100, 5, 6, 7], n_answer=3)], pad_id=0)
    smooth, n = causal_loss_sum(model, batch, label_smoothing=0.1)
    logits = model(input_ids=batch["input_ids"]).logits[0, 1:4]  # positions predicting 5, 6, 7
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor([5, 6, 7]), reduction="sum", label_smoothing=0.1)
    assert n == 3 and torch.allclose(smooth, ref, atol=1e-5)
    plain, _ = causal_loss_sum(model, batch)
    assert not torch.allclose(smooth, plain)


def test_dropout_override_and_layer_truncation(tiny_encoder: Path, tmp_path: Path) -> None:
    model = load_model(resolve_model(str(tiny_encoder)), head="sequence_classification", num_labels=2)
    set_dropout(model, 0.3)
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model.config.hidden_dropout_prob == 0.3
    keep_layers(model, 1)
    model.save_pretrained(tmp_path / "small")
    from transformers import AutoModelForSequenceClassification

    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "small")
    assert len(again.bert.encoder.layer) == 1 and again.config.num_hidden_layers == 1


def test_distillation_loss_is_hintons() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.7, 0.2, 0.1]])
    t = 2.0
    p = torch.softmax(torch.log(teacher) / t, -1)
    q = torch.softmax(student / t, -1)
    expected = t * t * float((p * (p.log() - q.log())).sum())
    assert float(distillation_loss_sum(student, teacher, t)) == pytest.approx(expected, rel=1e-6)
    same = torch.log(teacher)  # a student equal to the teacher pays nothing
    assert float(distillation_loss_sum(same, teacher, t)) == pytest.approx(0.0, abs=1e-6)


def test_distilled_smaller_student_learns_from_the_teacher(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(60))
    teacher = api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "teacher", epochs=4, lr=3e-3),
                        **QUIET)
    assert teacher.report is not None and teacher.report["tuned"]["accuracy"] == 1.0
    raw = base_recipe(tiny_encoder, "classification", train, tmp_path / "student", epochs=6, lr=3e-3)
    raw.update(model_layers=1, distill={"teacher": str(teacher.run_dir), "temperature": 2.0, "alpha": 0.7})
    report = api.train(raw, **QUIET).report
    assert report is not None and report["parameters"]["total"] < teacher.report["parameters"]["total"]
    assert report["tuned"]["accuracy"] >= 0.9
    loaded = api.load_run(tmp_path / "student")  # reloads with the same truncation
    assert len(loaded.model.bert.encoder.layer) == 1


def test_distillation_refuses_a_teacher_of_another_task(tmp_path: Path, tiny_decoder: Path) -> None:
    from tuneforge.errors import ConfigError

    products = write_jsonl(tmp_path / "products.jsonl", product_rows(16))
    teacher = api.train(base_recipe(tiny_decoder, "extraction", products, tmp_path / "teacher", max_steps=1), **QUIET)
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16))
    raw = base_recipe(tiny_decoder, "classification", train, tmp_path / "student", max_steps=1)
    raw["distill"] = {"teacher": str(teacher.run_dir)}
    with pytest.raises(ConfigError, match="is a extraction run"):
        api.train(raw, **QUIET)


def _sentiment_task_and_model(tmp_path: Path, tiny_encoder: Path):  # type: ignore[no-untyped-def]
    from tuneforge.data.readers import read_records
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks.base import get_task

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(8))
    recipe = recipe_from_dict(base_recipe(tiny_encoder, "classification", train, tmp_path / "run"))
    resolved = resolve_model(str(tiny_encoder))
    task = get_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    examples = task.parse(read_records(train), "train")
    task.fit_schema(examples)
    torch.manual_seed(0)
    model = load_model(resolved, head=task.head, num_labels=2)
    model.eval()  # no dropout: the gradients below must be comparable
    return task, model, [task.encode(e) for e in examples]


def test_dp_step_without_noise_or_clipping_is_the_mean_gradient(tmp_path: Path, tiny_encoder: Path) -> None:
    task, model, encoded = _sentiment_task_and_model(tmp_path, tiny_encoder)
    plan = plan_privacy(PrivacyConfig(noise_multiplier=1e-12, max_grad_norm=1e6), 8, 8, 1)
    private_step(model, task, encoded, plan, Accelerator(cpu=True))
    dp = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    loss, n = task.loss(model, task.collate(encoded), training=True)
    (loss / n).backward()  # one label per example: the batch mean equals the mean of per-example means
    for name, p in model.named_parameters():
        assert torch.allclose(dp[name], p.grad, atol=1e-6), name


def test_dp_step_clips_every_example(tmp_path: Path, tiny_encoder: Path) -> None:
    task, model, encoded = _sentiment_task_and_model(tmp_path, tiny_encoder)
    clip = 1e-3
    plan = plan_privacy(PrivacyConfig(noise_multiplier=1e-12, max_grad_norm=clip), 8, 8, 1)
    private_step(model, task, encoded, plan, Accelerator(cpu=True))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(norm) <= clip * (1 + 1e-4)  # the mean of vectors of norm <= C has norm <= C


def test_privacy_accounting_meets_the_target() -> None:
    plan = plan_privacy(PrivacyConfig(target_epsilon=4.0, delta=1e-5), n_examples=1000, batch=50, steps=200)
    report = spent(plan, 200)
    assert report["epsilon"] <= 4.0 + 0.05 and report["epsilon"] > 3.0
    assert spent(plan, 20)["epsilon"] < report["epsilon"]  # fewer steps spend less


def test_private_run_reports_the_privacy_spent(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40))
    raw = base_recipe(tiny_encoder, "classification", train, tmp_path / "run", max_steps=4, lr=1e-3)
    raw["train"]["privacy"] = {"target_epsilon": 3.0}
    report = api.train(raw, **QUIET).report
    assert report is not None and 0 < report["privacy"]["epsilon"] <= 3.05
    assert "Differential privacy" in (tmp_path / "run" / "report.md").read_text()


def _task_and_model(tmp_path: Path, tiny_decoder: Path, method: dict | None = None):
    from tuneforge.methods.base import get_method
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.tasks.base import get_task

    train = write_jsonl(tmp_path / "train.jsonl", product_rows(8))
    raw = base_recipe(tiny_decoder, "extraction", train, tmp_path / "run")
    if method is not None:
        raw["method"] = method
    recipe = recipe_from_dict(raw)
    resolved = resolve_model(str(tiny_decoder))
    task = get_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    model = load_model(resolved, head="causal_lm")
    if method is not None:
        model = get_method(recipe.method).prepare(model, "causal_lm")
    chunks = forgetting.general_chunks(ForgettingConfig(max_chunks=4), task.tokenizer, 32)
    return task, model, chunks


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_distance(tmp_path: Path, tiny_decoder: Path) -> None:
    task, model, chunks = _task_and_model(tmp_path, tiny_decoder)
    penalty = ewc_penalty(model, task, chunks, EWCConfig(weight=10.0, batches=2), batch_size=2)
    assert float(penalty(model)) == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    assert float(penalty(model)) > 0.0


def test_ewc_fisher_is_the_mean_of_per_sequence_squared_gradients(tmp_path: Path, tiny_decoder: Path) -> None:
    task, model, chunks = _task_and_model(tmp_path, tiny_decoder)
    penalty = ewc_penalty(model, task, chunks[:2], EWCConfig(weight=1.0, batches=1), batch_size=2)
    name, param = "model.norm.weight", dict(model.named_parameters())["model.norm.weight"]
    squares = []
    for seq in chunks[:2]:
        model.zero_grad()
        loss, n = task.loss(model, collate_causal([seq], pad_id=0))
        (loss / n).backward()
        squares.append(param.grad.detach() ** 2)
    fisher, _ = penalty.params[name]
    assert torch.allclose(fisher, (squares[0] + squares[1]) / 2, rtol=1e-4, atol=1e-12)


def test_ewc_on_lora_penalises_the_merged_update_with_the_frozen_weights_fisher(tmp_path: Path,
                                                                               tiny_decoder: Path) -> None:
    """At B = 0 the adapter's own gradients carry no Fisher; the frozen weight's do, and the update is B @ A."""
    task, model, chunks = _task_and_model(tmp_path, tiny_decoder, {"name": "lora", "r": 4, "alpha": 8})
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    penalty = ewc_penalty(model, task, chunks, EWCConfig(weight=3.0, batches=2), batch_size=2)
    assert penalty.adapted and not any("lora_" in n for n in penalty.params)  # adapters judged by their update
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert all(not p.requires_grad and p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert float(penalty(model)) == 0.0
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    expected = 0.0
    for name, layer in penalty.adapted.items():
        module = model.get_submodule(name)
        merged_minus_base = module.get_delta_weight(module.active_adapters[0])
        expected += 1.5 * float((layer.fisher * merged_minus_base**2).sum())
    assert expected > 0 and math.isclose(float(penalty(model)), expected, rel_tol=1e-5)
    value = penalty.backward(model, lambda t: t.backward())  # the layer-by-layer gradient equals the whole one's
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    penalty(model).backward()
    assert math.isclose(value, expected, rel_tol=1e-5) and penalty.last == value
    assert grads and all(torch.allclose(grads[n], p.grad, atol=1e-9) for n, p in model.named_parameters() if n in grads)


def test_ewc_keeps_the_weights_that_matter_for_general_text(tmp_path: Path, tiny_decoder: Path) -> None:
    """Measured by the Fisher-weighted distance EWC itself penalises, which plain training ignores."""
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(24))
    moved = {}
    for name, guard in (("plain", None), ("ewc", {"weight": 1e4, "batches": 2})):
        raw = base_recipe(tiny_decoder, "extraction", train, tmp_path / name, max_steps=6, lr=1e-2)
        raw["forgetting"] = {"measure": False, "max_chunks": 4, "ewc": guard}
        raw["eval"]["base"] = False
        api.train(raw, **QUIET)
        moved[name] = api.load_run(tmp_path / name).model
    base = api.load_run(tmp_path / "plain", tuned=False)
    chunks = forgetting.general_chunks(ForgettingConfig(max_chunks=4), base.task.tokenizer, 64)
    penalty = ewc_penalty(base.model, base.task, chunks, EWCConfig(weight=1.0, batches=2), batch_size=2)
    assert float(penalty(moved["ewc"])) < 0.5 * float(penalty(moved["plain"]))


def test_ewc_on_lora_keeps_the_update_small_where_general_text_needs_it(tmp_path: Path, tiny_decoder: Path) -> None:
    """Measured by the Fisher-weighted size of the merged update, which plain LoRA training ignores."""
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(24))
    for name, guard in (("plain", None), ("ewc", {"weight": 1e5, "batches": 2})):
        raw = base_recipe(tiny_decoder, "extraction", train, tmp_path / name, max_steps=6, lr=1e-2)
        raw["method"] = {"name": "lora", "r": 4, "alpha": 8}
        raw["forgetting"] = {"measure": False, "max_chunks": 4, "ewc": guard}
        raw["eval"]["base"] = False
        api.train(raw, **QUIET)
    start = api.load_run(tmp_path / "plain", tuned=False)  # a fresh adapter (B = 0) on the base model
    for n, p in start.model.named_parameters():
        p.requires_grad_("lora_" in n)  # as in training
    chunks = forgetting.general_chunks(ForgettingConfig(max_chunks=4), start.task.tokenizer, 64)
    reference = ewc_penalty(start.model, start.task, chunks, EWCConfig(weight=1.0, batches=2), batch_size=2)
    assert reference.adapted
    sizes = {}
    with torch.no_grad():
        for name in ("plain", "ewc"):
            model = api.load_run(tmp_path / name).model
            sizes[name] = sum(float((a.fisher * model.get_submodule(n).get_delta_weight("default") ** 2).sum())
                              for n, a in reference.adapted.items())
    log = [json.loads(line) for line in (tmp_path / "ewc" / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("ewc_penalty", 0) > 0 for e in log)  # the penalty is logged per step
    assert 0 < sizes["ewc"] < 0.5 * sizes["plain"]


def test_forgetting_is_measured_and_rehearsal_mixes_general_text(tmp_path: Path, tiny_decoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", product_rows(20))
    raw = base_recipe(tiny_decoder, "extraction", train, tmp_path / "run", max_steps=3)
    raw["forgetting"] = {"max_chunks": 8, "rehearsal": {"fraction": 0.25}}
    result = api.train(raw, **QUIET)
    report = result.report
    assert report is not None
    f = report["forgetting"]
    assert f["before"]["general_perplexity"] > 1 and 0 <= f["after"]["probe_accuracy"] <= 1
    assert f["perplexity_change"] == pytest.approx(f["after"]["general_perplexity"] / f["before"]["general_perplexity"] - 1)
    assert "forgetting check" in (result.run_dir / "report.md").read_text()
    n_rows = json.loads((result.run_dir / "preflight.json").read_text())["data"]["rows"]
    assert n_rows == 12 + 4  # 12 training rows after the split, plus a quarter of the final set from general text


def test_forgetting_needs_a_decoder(tmp_path: Path, tiny_encoder: Path) -> None:
    from tuneforge.errors import ConfigError

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16))
    raw = base_recipe(tiny_encoder, "classification", train, tmp_path / "run", max_steps=1)
    raw["forgetting"] = {}
    with pytest.raises(ConfigError, match="needs a decoder"):
        api.train(raw, **QUIET)


def test_probe_file_errors_name_the_line(tmp_path: Path) -> None:
    from tuneforge.errors import ConfigError

    bad = tmp_path / "probe.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": "q", "choices": ["a"], "answer": 3}\n')
    with pytest.raises(ConfigError, match=r"probe.jsonl:2"):
        forgetting.load_probe(ForgettingConfig(probe=bad))
    assert math.isfinite(len(forgetting.load_probe(ForgettingConfig())))
