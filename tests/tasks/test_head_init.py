"""A new encoder head imprinted from class means starts as a centroid classifier over the features it reads."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import sentiment_rows
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import recipe_from_dict
from tuneforge.tasks.base import Example, get_task
from tuneforge.tasks.classification import label_layer


def test_the_imprinted_head_votes_like_the_nearest_centred_class_mean(tiny_encoder: Path) -> None:
    recipe = recipe_from_dict({"task": "classification", "model": str(tiny_encoder), "data": {"train": "x.jsonl"}},
                              check_files=False)
    resolved = resolve_model(str(tiny_encoder))
    task = get_task(recipe, load_tokenizer(resolved.path), "encoder")
    examples = [Example(where=f"row {i}", text=r["text"], target=r["label"]) for i, r in enumerate(sentiment_rows(40))]
    task.fit_schema(examples)
    torch.manual_seed(0)
    model = load_model(resolved, head="sequence_classification", num_labels=2).eval()
    head = label_layer(model, 2)
    before = head.weight.detach().clone()
    done = task.init_head(model, examples)
    assert not torch.equal(before, head.weight)

    feats: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, inputs: feats.append(inputs[0].detach()))
    predicted = [p["prediction"] for p in task.predict(model, examples)]
    handle.remove()
    x = torch.cat(feats)  # (N, H)
    y = torch.tensor([task.labels.index(e.target) for e in examples])
    centre = x.mean(0)
    means = torch.stack([torch.nn.functional.normalize((x[y == k] - centre).mean(0), dim=0) for k in range(2)])
    nearest = ((x - centre) @ means.T).argmax(-1)  # (N,): the nearest centred class mean, by direction
    assert predicted == [task.labels[int(k)] for k in nearest]
    assert done["train_accuracy"] == float((nearest == y).float().mean())
    rows = torch.nn.functional.normalize(head.weight.detach(), dim=-1)
    assert torch.allclose(rows, means, atol=1e-5)  # each label's row points at its centred mean


def test_the_head_start_reads_at_most_a_fixed_number_of_rows_per_label() -> None:
    from tuneforge.tasks.classification import per_class_sample

    rows = [Example(where=str(i), text="t", target="a" if i % 4 else "b") for i in range(40)]
    kept = per_class_sample(rows, 5)
    assert [e.where for e in kept] == ["0", "1", "2", "3", "4", "5", "6", "8", "12", "16"]
