"""Shared fixtures: tiny random models built in-process and small data files written per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tuneforge.infer import precision

torch.set_num_threads(1)  # tiny models: threads only add noise and overhead


@pytest.fixture(autouse=True)
def _inference_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """``eval.dtype: auto`` decodes in bfloat16 on CPUs with AMX or AVX-512-BF16; tests compare decoding with float32
    references, so they see a CPU without (tests/infer/test_precision.py sets it back where bf16 is the point)."""
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)


@pytest.fixture(scope="session", autouse=True)
def _private_run_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Finished runs register themselves in the run catalogue: keep tests out of the user's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_REGISTRY", str(tmp_path_factory.getbasetemp() / "runs.sqlite"))
        mp.setenv("TUNEFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # and out of its encoding cache
        yield


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tuneforge.models.tiny import make_tiny_decoder

    return make_tiny_decoder(tmp_path_factory.mktemp("tiny-decoder"), seed=0)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tuneforge.models.tiny import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"), seed=0)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


COLOURS = ["red", "blue", "green", "black"]


def sentiment_rows(n: int) -> list[dict[str, Any]]:
    """Separable toy sentiment: the label is decided by one word."""
    good = ["great", "lovely", "excellent", "superb"]
    bad = ["awful", "terrible", "poor", "broken"]
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        word = (good if positive else bad)[i % 4]
        rows.append({"text": f"the {COLOURS[i % 4]} lamp is {word} item {i}", "label": "pos" if positive else "neg"})
    return rows


def product_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        colour = COLOURS[i % 4]
        rows.append({"text": f"Acme {colour} mug size {i % 3 + 1}", "attributes": {"brand": "Acme", "colour": colour}})
    return rows


def chat_rows(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"say {COLOURS[i % 4]}"},
                          {"role": "assistant", "content": f"{COLOURS[i % 4]} it is"}]} for i in range(n)]


def base_recipe(model: Path, task: str, train: Path, out: Path, **train_cfg: Any) -> dict[str, Any]:
    cfg = {"epochs": 2, "lr": 1e-2, "batch_size": 4, "seed": 0, "max_length": 64, **train_cfg}
    return {"task": task, "model": str(model), "method": {"name": "full"},
            "data": {"train": str(train), "split": {"validation": 0.2, "test": 0.2}},
            "train": cfg, "eval": {"max_new_tokens": 12, "batch_size": 8}, "output": str(out)}


def loss_and_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One seeded causal-LM loss and its gradients: two forward paths of one model compare bit for bit."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout draws on both paths
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
