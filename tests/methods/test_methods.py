"""Every registered method on both model kinds: what should train trains, what is frozen stays bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator

from conftest import base_recipe, product_rows, sentiment_rows, write_jsonl
from tuneforge.data.readers import read_records
from tuneforge.run.splits import load_saved_split
from tuneforge.errors import ConfigError, UserError
from tuneforge.methods import METHODS, count_parameters, get_method
from tuneforge.methods.base import transformer_blocks
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import recipe_from_dict
from tuneforge.run.folder import RunDir
from tuneforge.tasks.base import get_task
from tuneforge.train.loop import fit

METHOD_CONFIGS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "freeze": {"name": "freeze", "trainable_layers": 1},
    "layer_freeze": {"name": "layer_freeze", "frozen_layers": 1},
    "gradual_unfreeze": {"name": "gradual_unfreeze", "every_steps": 1},
    "discriminative": {"name": "discriminative", "layer_lr_decay": 0.5, "head_lr": 2e-2},
    "dora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "use_dora": True},
    "rslora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "use_rslora": True, "rank_pattern": {"q_proj": 2}},
    "ia3": {"name": "ia3"},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 4},
    "prefix_tuning": {"name": "prefix_tuning", "num_virtual_tokens": 4},
}


def test_matrix_covers_every_registered_method() -> None:
    assert sorted({c["name"] for c in METHOD_CONFIGS.values()}) == METHODS.names()


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
    trainable = method.trainable_names(model)
    fit(model=model, task=task, method=method, train=[task.encode(e) for e in examples], validate=None,
        cfg=recipe.train, run=RunDir(tmp_path / "run"), accelerator=Accelerator(cpu=True), resume=False)
    after = {n: p.detach() for n, p in model.named_parameters()}
    return before, {"after": after, "trainable": trainable}, model


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", sorted(METHOD_CONFIGS))
def test_trainable_changes_and_frozen_is_bit_identical(tmp_path: Path, tiny_encoder: Path, tiny_decoder: Path,
                                                       kind: str, name: str) -> None:
    model_dir = tiny_encoder if kind == "encoder" else tiny_decoder
    if name == "prefix_tuning" and kind == "encoder":
        with pytest.raises(ConfigError, match="needs a decoder"):
            _train(tmp_path, model_dir, kind, METHOD_CONFIGS[name])
        return
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
    from tuneforge.methods.lora import LoraMethod

    merged = Lora(LoraMethod(r=4, alpha=8)).merge(model)
    assert torch.allclose(merged(input_ids=ids).logits, adapted, atol=1e-5)


MERGEABLE = ("full", "lora", "dora", "rslora", "ia3", "layer_freeze", "discriminative", "gradual_unfreeze", "freeze")


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", sorted(METHOD_CONFIGS))
def test_every_method_round_trips_through_a_run_folder(tmp_path: Path, tiny_encoder: Path, tiny_decoder: Path,
                                                        kind: str, name: str) -> None:
    """Train through the API, reload the run, and get the same predictions; the export (merged) agrees too."""
    if name == "prefix_tuning" and kind == "encoder":
        pytest.skip("prefix tuning is decoder-only (checked above)")
    from tuneforge import api
    from tuneforge.recipe import recipe_to_yaml

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24))
    model_dir = tiny_encoder if kind == "encoder" else tiny_decoder
    raw = base_recipe(model_dir, "classification", train, tmp_path / "run", max_steps=3, lr=1e-2)
    raw["method"] = METHOD_CONFIGS[name]
    raw["eval"] = {"base": False, "max_new_tokens": 8}
    recipe = recipe_from_dict(raw)
    assert recipe_from_dict(yaml.safe_load(recipe_to_yaml(recipe))) == recipe  # the section round-trips
    result = api.train(recipe, echo=lambda *_: None)
    saved = [json.loads(x) for x in (result.run_dir / "predictions" / "tuned.jsonl").read_text().splitlines()]
    loaded = api.load_run(result.run_dir)
    test = loaded.task.parse(load_saved_split(result.run_dir / "data", "test"), "test")
    again = loaded.task.predict(loaded.model, test)
    for a, b in zip(saved, again):
        assert a["prediction"] == b["prediction"]
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
    if name in MERGEABLE:
        ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
        unmerged = loaded.model(input_ids=ids).logits
        merged = loaded.method.merge(loaded.model)
        assert torch.allclose(merged(input_ids=ids).logits, unmerged, atol=1e-5)
    else:
        with pytest.raises(UserError, match="cannot be folded"):
            api.export(result.run_dir)


def test_layer_freeze_keeps_the_bottom_blocks_and_embeddings(tmp_path: Path, tiny_decoder: Path) -> None:
    before, out, model = _train(tmp_path, tiny_decoder, "decoder", METHOD_CONFIGS["layer_freeze"])
    blocks_name, _ = transformer_blocks(model)
    frozen = [n for n in before if n.startswith(f"{blocks_name}.0.") or "embed" in n]
    assert frozen and all(n not in out["trainable"] for n in frozen)
    assert any(n.startswith(f"{blocks_name}.1.") for n in out["trainable"])


def test_gradual_unfreezing_follows_its_schedule(tiny_encoder: Path) -> None:
    from tuneforge.methods.gradual import GradualUnfreeze
    from tuneforge.methods.gradual import GradualUnfreezeMethod

    model = load_model(resolve_model(str(tiny_encoder)), head="sequence_classification", num_labels=2)
    method = GradualUnfreeze(GradualUnfreezeMethod(every_epochs=1))
    model = method.prepare(model, "sequence_classification")
    blocks_name, blocks = transformer_blocks(model)
    trainable = lambda: {n for n, p in model.named_parameters() if p.requires_grad}  # noqa: E731
    assert all(not n.startswith(blocks_name) and "embeddings" not in n for n in trainable())  # head only
    method.on_step(model, 5, steps_per_epoch=5)  # epoch 1: the top block joins
    assert any(n.startswith(f"{blocks_name}.{len(blocks) - 1}.") for n in trainable())
    assert not any(n.startswith(f"{blocks_name}.0.") for n in trainable())
    method.on_step(model, 5 * (len(blocks) + 1), steps_per_epoch=5)  # all blocks, then the embeddings
    assert trainable() == {n for n, _ in model.named_parameters()}
    method.on_step(model, 0, steps_per_epoch=5)  # idempotent: a resume at step 0 goes back to the head only
    assert not any(n.startswith(blocks_name) for n in trainable())


def test_discriminative_rates_decay_from_the_top(tiny_encoder: Path) -> None:
    from tuneforge.methods.discriminative import Discriminative
    from tuneforge.methods.discriminative import DiscriminativeMethod

    model = load_model(resolve_model(str(tiny_encoder)), head="sequence_classification", num_labels=2)
    method = Discriminative(DiscriminativeMethod(layer_lr_decay=0.5, head_lr=1.0))
    model = method.prepare(model, "sequence_classification")
    groups = method.param_groups(model, lr=0.1, weight_decay=0.01)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    blocks_name, blocks = transformer_blocks(model)
    top, bottom = len(blocks) - 1, 0
    assert rate[id(params["classifier.weight"])] == 1.0
    assert rate[id(params[f"{blocks_name}.{top}.attention.self.query.weight"])] == pytest.approx(0.1)
    assert rate[id(params[f"{blocks_name}.{bottom}.attention.self.query.weight"])] == pytest.approx(0.1 * 0.5 ** top)
    assert rate[id(params["bert.embeddings.word_embeddings.weight"])] == pytest.approx(0.1 * 0.5 ** len(blocks))
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim < 2 for p in g["params"]))
    assert sum(len(g["params"]) for g in groups) == len(params)


@pytest.mark.parametrize("name,marker", [("lora", "lora_"), ("dora", "lora_"), ("ia3", "ia3_l"),
                                         ("prompt_tuning", "prompt_encoder"), ("prefix_tuning", "prompt_encoder")])
def test_peft_methods_train_only_their_adapter(tmp_path: Path, tiny_decoder: Path, name: str, marker: str) -> None:
    before, out, model = _train(tmp_path, tiny_decoder, "decoder", METHOD_CONFIGS[name])
    assert out["trainable"] and all(marker in n for n in out["trainable"])
    if name == "dora":
        assert any("lora_magnitude_vector" in n for n in out["trainable"])
