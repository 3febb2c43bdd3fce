"""Learning curves: the power-law fit recovers known parameters; tuneforge curve trains real nested subsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import curve_fit

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge.evaluate.curve import fit_power_law, predict
from tuneforge.run.curve import learning_curve


def test_power_law_fit_recovers_planted_parameters() -> None:
    n = [50, 100, 200, 400, 800, 1600]
    score = [0.9 - 2.0 * x ** -0.5 for x in n]
    fit = fit_power_law(n, score)
    assert fit is not None
    assert (fit["a"], fit["b"], fit["c"]) == pytest.approx((0.9, 2.0, 0.5), abs=1e-6)
    assert predict(fit, 3200) == pytest.approx(0.9 - 2.0 * 3200 ** -0.5, abs=1e-6)
    ref, _ = curve_fit(lambda v, a, b, c: a - b * np.power(v, -c), np.array(n, float), np.array(score), p0=[0.95, 1, 0.5])
    assert fit["a"] == pytest.approx(ref[0], abs=1e-6)
    assert fit_power_law([10, 20], [0.5, 0.6]) is None  # two points cannot pin three parameters


def test_curve_trains_growing_subsets_and_attaches_the_plot(tmp_path: Path, tiny_encoder: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(80))
    recipe = base_recipe(tiny_encoder, "classification", train, tmp_path / "run", epochs=2, lr=3e-3)
    result = learning_curve(recipe, [0.25, 0.5, 1.0], output=tmp_path / "curve", echo=lambda *_: None)
    n = [p["n_train"] for p in result["points"]]
    assert n == sorted(n) and n[-1] == 48 and n[0] == 12  # 80 rows - 20% validation - 20% test = 48
    for p in result["points"]:  # every point is the test score of a real run with that many training rows
        report = json.loads((Path(p["run"]) / "report.json").read_text())
        assert report["tuned"]["accuracy"] == p["score"]
        assert len((Path(p["run"]) / "data" / "train.jsonl").read_text().splitlines()) == p["n_train"]
    assert (tmp_path / "curve" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    full = Path(result["points"][-1]["run"])
    assert "learning_curve" in json.loads((full / "report.json").read_text())["figures"]
    assert (full / "report.html").read_text().count("data:image/png;base64,") == 4
