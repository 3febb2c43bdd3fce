"""Robustness perturbations do what they say, deterministically; the check scores real perturbed inputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import base_recipe, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.evaluate.robustness import perturb, truncate, typos, whitespace
from tuneforge.tasks.base import Example


def test_perturbations_change_only_what_they_claim() -> None:
    text = "please remember to water the beautiful garden tomorrow morning"
    noisy = typos(text, random.Random(1), rate=1.0)
    assert noisy != text and len(noisy.split()) == len(text.split())
    assert all(abs(len(a) - len(b)) <= 1 for a, b in zip(noisy.split(), text.split()))
    assert whitespace(text, random.Random(0)).split() == text.split()
    assert truncate(text, random.Random(0)) == "please remember to water"
    ex = [Example(where="f:1", text=text, target="x", messages=[{"role": "user", "content": text}])]
    once, again = perturb(ex, "typos", 0), perturb(ex, "typos", 0)
    assert once[0].text == again[0].text  # seeded
    assert perturb(ex, "uppercase", 0)[0].messages[0]["content"] == text.upper()
    assert ex[0].messages[0]["content"] == text  # the clean examples are not modified


def test_robustness_on_a_tiny_run(tmp_path: Path, tiny_encoder: Path) -> None:
    words = {"pos": ["great", "lovely", "superb"], "neg": ["awful", "poor", "broken"]}
    rows = [{"text": f"the lamp number {i} is {words[label][i % 3]}", "label": label}
            for i, label in enumerate(["pos", "neg"] * 40)]  # only the last word tells the label
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    run = api.train(base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=4, lr=3e-3),
                    echo=lambda *_: None).run_dir
    assert main(["robustness", str(run), "--perturbations", "truncate,lowercase"]) == 0
    result = json.loads((run / "robustness.json").read_text())
    rows = {r["perturbation"]: r for r in result["rows"]}
    assert set(rows) == {"truncate", "lowercase"}
    clean = json.loads((run / "report.json").read_text())["tuned"]["accuracy"]
    assert clean >= 0.9  # the model learnt the label word, so removing it must hurt
    for r in rows.values():
        assert r["clean"] == clean  # the same model on the same clean items as the run's report
        lo, hi = r["item_change_ci"]
        assert lo <= r["change"] + 1e-12 and r["change"] <= hi + 1e-12
    # truncation keeps "the lamp number": every input looks the same, so about half the answers flip
    assert rows["truncate"]["flip_rate"] > 0
    assert (run / "robustness.md").is_file()
