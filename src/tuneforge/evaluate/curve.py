"""``tuneforge curve``: fit a learning curve to runs on growing subsets of the training data.

The runs are trained by :func:`tuneforge.run.curve.learning_curve`. Each point is a real run of the
recipe with ``data.max_train_rows`` set to a fraction of the training split (nested subsets: the first N rows, so every smaller subset is inside the larger
ones; keep the training file in random order). The test score of each run is fitted with the
inverse power law ``score(n) = a - b * n^(-c)`` (Frey and Fisher, 1999; Figueroa et al., 2012,
https://doi.org/10.1186/1472-6947-12-8), by ``scipy.optimize.curve_fit`` with ``a`` bounded by the
metric's range, which extrapolates what 2x and 10x more data would buy. With fewer than 3 points
nothing is fitted. Lower-is-better metrics are fitted as ``a + b * n^(-c)``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.evaluate import plots
from tuneforge.evaluate import page as html
from tuneforge.evaluate.report_page import LEARNING_CURVE, render_html
from tuneforge.run.folder import RunDir
from tuneforge.files import write_json_atomic, write_text_atomic


def fit_power_law(n: list[float], score: list[float], *, higher_is_better: bool = True,
                  upper: float | None = 1.0) -> dict[str, float] | None:
    """Least-squares fit of ``a - b n^-c`` (or ``a + b n^-c``); ``None`` with < 3 points or when it fails."""
    from scipy.optimize import OptimizeWarning, curve_fit

    if len(n) < 3:
        return None
    x, y = np.asarray(n, dtype=np.float64), np.asarray(score, dtype=np.float64)
    sign = -1.0 if higher_is_better else 1.0

    def law(v: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a + sign * b * np.power(v, -c)

    top = upper if (upper is not None and higher_is_better) else np.inf
    a0 = min(float(y.max()) + 0.01, top) if higher_is_better else float(y.min()) * 0.9
    try:
        with warnings.catch_warnings():  # 3 points fit 3 parameters exactly: no covariance, and that is expected
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(law, x, y, p0=[a0, 1.0, 0.5], bounds=([-np.inf, 0.0, 1e-3], [top, np.inf, 3.0]),
                                  maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    a, b, c = (float(p) for p in params)
    residual = float(np.sqrt(np.mean((law(x, a, b, c) - y) ** 2)))
    return {"a": a, "b": b, "c": c, "sign": sign, "rmse": residual}


def predict(fit: dict[str, float], n: float) -> float:
    return fit["a"] + fit["sign"] * fit["b"] * n ** (-fit["c"])


def write_curve(points: list[dict[str, Any]], metric: str, out: Path, echo: Any = print) -> dict[str, Any]:
    """Fit the measured points and write curve.json/.md/.png/.html; the curve also joins the largest run's report."""
    result = summarise(points, metric, lower=metric in ("perplexity", "log_loss", "loss"))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "curve.json", result)
    png = plots.learning_curve(result)
    (out / "curve.png").write_bytes(png)
    write_text_atomic(out / "curve.md", render_markdown(result))
    write_text_atomic(out / "curve.html", html.page(f"tuneforge learning curve: {metric}", [
        ("", html.figure(png, "score against training examples, with the fitted power law")),
        ("Points", html.table(_table(result))), ("Extrapolation", html.paragraph(_verdict(result)))]))
    _attach(result, Path(points[-1]["run"]))
    echo(render_markdown(result))
    return result


def summarise(points: list[dict[str, Any]], metric: str, lower: bool) -> dict[str, Any]:
    n = [p["n_train"] for p in points]
    score = [p["score"] for p in points]
    fit = fit_power_law(n, score, higher_is_better=not lower, upper=None if lower else 1.0)
    result: dict[str, Any] = {"metric": metric, "lower_is_better": lower, "points": points, "n_train": n, "score": score}
    if fit is not None:
        xs = np.geomspace(min(n), 10 * max(n), 60)
        fit["x"] = xs.tolist()
        fit["y"] = [predict(fit, x) for x in xs]
        fit["predicted"] = {f"{k}x": predict(fit, k * max(n)) for k in (2, 4, 10)}
        result["fit"] = fit
    return result


def _table(result: dict[str, Any]) -> list[list[str]]:
    rows = [["fraction", "training rows", result["metric"], "95% CI", "train s"]]
    for p in result["points"]:
        ci = "-" if not p["ci"] else f"[{p['ci'][0]:.4f}, {p['ci'][1]:.4f}]"
        rows.append([f"{p['fraction']:g}", str(p["n_train"]), f"{p['score']:.4f}", ci,
                     "-" if p["train_seconds"] is None else f"{p['train_seconds']:.0f}"])
    return rows


def _verdict(result: dict[str, Any]) -> str:
    fit = result.get("fit")
    if fit is None:
        return "Too few points (or no convergence) to fit a curve; measure at least 3 fractions."
    last = result["score"][-1]
    pred = fit["predicted"]
    return (f"Fit {result['metric']}(n) = {fit['a']:.4f} {'-' if fit['sign'] < 0 else '+'} {fit['b']:.4g} n^-{fit['c']:.3f} "
            f"(RMSE {fit['rmse']:.4f} on the measured points). At {result['n_train'][-1]} rows the score is {last:.4f}; "
            f"the fit predicts {pred['2x']:.4f} with 2x the data, {pred['10x']:.4f} with 10x, and a ceiling of "
            f"{fit['a']:.4f}. An extrapolation from {len(result['points'])} points: a guide, not a promise.")


def render_markdown(result: dict[str, Any]) -> str:
    rows = _table(result)
    md = [f"# tuneforge learning curve: {result['metric']}", "", "| " + " | ".join(rows[0]) + " |",
          "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(md + ["", _verdict(result)]) + "\n"


def _attach(result: dict[str, Any], run_dir: Path) -> None:
    """Put the curve into the largest run's report (report.json figures, report.html) so it shows there too."""
    run = RunDir(run_dir)
    write_json_atomic(run.root / LEARNING_CURVE, result)
    if run.report_json.is_file():
        report = json.loads(run.report_json.read_text(encoding="utf-8"))
        report.setdefault("figures", {})["learning_curve"] = result
        write_json_atomic(run.report_json, report)
        write_text_atomic(run.root / "report.html", render_html(report))


