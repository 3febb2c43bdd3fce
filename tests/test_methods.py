"""Every registered method on both model kinds: what should train trains, what is frozen stays bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from conftest import base_recipe, product_rows, sentiment_rows, write_jsonl
from tuneforge.data.readers import read_records
from tuneforge.methods import METHODS, count_parameters, get_method
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.registry import resolve_model
from tuneforge.recipe import recipe_from_dict
from tuneforge.rundir import RunDir
from tuneforge.tasks.base import get_task
from tuneforge.train.loop import fit

METHOD_CONFIGS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "freeze": {"name": "freeze", "trainable_layers": 1},
}


def test_matrix_covers_every_registered_method() -> None:
    assert sorted(METHOD_CONFIGS) == METHODS.names()


def _train(tmp_path: Path, model_dir: Path, kind: str, method_cfg: dict) -> tuple[dict, dict, torch.nn.Module]:
    rows = sentiment_rows(16) if kind == "encoder" else product_rows(16)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    raw = base_recipe(model_dir, "classification" if kind == "encoder" else "extraction", train, tmp_path / "run",
                      max_steps=4, lr=1e-2)
    raw["method"] = method_cfg
    recipe = recipe_from_dict(raw)
    resolved = resolve_model(str(model_dir))
    task = get_task(recipe, load_tokenizer(resolved.path), resolved.kind)
    examples = task.parse(read_records(train), "train")
    task.fit_schema(examples)
    labels = task.schema.get("labels")
    torch.manual_seed(0)
    model = load_model(resolved, head=task.head, num_labels=len(labels) if kind == "encoder" else None)
    method = get_method(recipe.method)
    model = method.prepare(model, task.head)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    fit(model=model, task=task, method=method, train=[task.encode(e) for e in examples], validate=None,
        cfg=recipe.train, run=RunDir(tmp_path / "run"), accelerator=Accelerator(cpu=True), resume=False)
    after = {n: p.detach() for n, p in model.named_parameters()}
    return before, {"after": after, "trainable": trainable}, model


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", sorted(METHOD_CONFIGS))
def test_trainable_changes_and_frozen_is_bit_identical(tmp_path: Path, tiny_encoder: Path, tiny_decoder: Path,
                                                       kind: str, name: str) -> None:
    model_dir = tiny_encoder if kind == "encoder" else tiny_decoder
    before, out, model = _train(tmp_path, model_dir, kind, METHOD_CONFIGS[name])
    after, trainable = out["after"], out["trainable"]
    assert trainable, "something must train"
    for n in before:
        if n in trainable:
            assert not torch.equal(before[n], after[n]), f"{n} should have changed"
        else:
            assert torch.equal(before[n], after[n]), f"{n} is frozen and must stay bit-identical"
    counts = count_parameters(model)
    assert counts["trainable"] == sum(before[n].numel() for n in trainable)
    if name == "lora":
        assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    if name == "full":
        assert counts["trainable"] == counts["total"]
    if name == "freeze":
        assert counts["trainable"] < counts["total"]
        embeddings = model.get_input_embeddings().weight
        assert not embeddings.requires_grad


def test_lora_merge_matches_the_adapted_model(tmp_path: Path, tiny_decoder: Path) -> None:
    _, _, model = _train(tmp_path, tiny_decoder, "decoder", METHOD_CONFIGS["lora"])
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    model.eval()
    adapted = model(input_ids=ids).logits
    from tuneforge.methods.lora import Lora
    from tuneforge.recipe import LoraMethod

    merged = Lora(LoraMethod(r=4, alpha=8)).merge(model)
    assert torch.allclose(merged(input_ids=ids).logits, adapted, atol=1e-5)
