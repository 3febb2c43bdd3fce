"""Compare what a served model sees with what it was trained on, and say whether to re-train.

``monitor(run_dir, log)`` reads the request log written by ``tuneforge serve --log-requests`` and
the run's own training split (``RUN_DIR/data/train.jsonl``) and runs one test per question:

- **Embedding drift**: do live inputs mean something else? A classifier two-sample test
  (Lopez-Paz & Oquab, 2017, https://arxiv.org/abs/1610.06545): logistic regression tries to tell
  MiniLM sentence embeddings of training rows from live rows; its out-of-fold ROC AUC is 0.5
  when they are alike. The AUC is the Mann-Whitney U statistic of the out-of-fold scores over
  ``n1 * n2``, so ``scipy.stats.mannwhitneyu`` gives its p-value in one call (a permutation test
  of the same AUC refits the classifier hundreds of times: a minute on a shared CPU).
- **Length drift**: are inputs longer or shorter (in the run's own tokens)? Two-sample
  Kolmogorov-Smirnov (``scipy.stats.ks_2samp``).
- **Label shift** (classification): does the model predict the labels in other proportions than
  training had them? Chi-square test of homogeneity (``scipy.stats.chi2_contingency``).
- **Out-of-vocabulary rate**: the share of live words never seen in training, against the same
  rate of the run's own held-out split (the rate a sample *without* drift has).
- **Serving**: request count, 4xx and 5xx rates and latency percentiles from the log.

With a few hundred rows every test turns significant for a negligible difference, so a test
flags drift only when its p-value is under ``alpha`` *and* its effect size passes a threshold
(AUC, KS statistic, Cramer's V, OOV excess) set in ``Thresholds``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.readers import read_records
from tuneforge.run.splits import load_saved_split
from tuneforge.errors import DataError, UserError
from tuneforge.models.resolve import MODELS, resolve_model
from tuneforge.files import write_json_atomic, write_text_atomic
from tuneforge.run.folder import RunDir
from tuneforge.run.loading import load_task
from tuneforge.tasks.base import Example

WORD = re.compile(r"[^\W\d_]+")  # runs of letters: numbers and punctuation are not vocabulary


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.01
    min_live: int = 30
    auc: float = 0.65
    ks: float = 0.15
    cramers_v: float = 0.15
    oov_excess: float = 0.05
    max_samples: int = 500


# ----------------------------------------------------------------------------- inputs
def _run_examples(run_dir: Path) -> tuple[Any, list[Example], list[Example]]:
    """The run's task (tokenizer, schema) and its training and held-out examples, parsed by the task."""
    _, task, _ = load_task(run_dir)
    run = RunDir(run_dir)
    train = task.parse(load_saved_split(run.data, "train"), str(run.data / "train.jsonl"))
    held = []
    for split in ("test", "validation"):
        if (run.data / f"{split}.jsonl").is_file():
            held = task.parse(load_saved_split(run.data, split), str(run.data / f"{split}.jsonl"))
            if held:
                break
    return task, train, held


@dataclass
class LiveLog:
    inputs: list[str]
    outputs: list[Any]
    statuses: list[int]
    latencies: list[float]
    times: list[str]


def read_log(path: Path) -> LiveLog:
    """The request log: one JSON object per request (``status``, ``latency_s``, ``inputs``, ``outputs``)."""
    if not path.is_file():
        raise UserError(f"{path}: no such request log; write one with `tuneforge serve RUN --log-requests {path}`")
    records = read_records(path)
    log = LiveLog([], [], [], [], [])
    bad = []
    for r in records:
        f = r.fields
        if not isinstance(f.get("status"), int) or not isinstance(f.get("latency_s"), (int, float)):
            bad.append(f"{r.where()}: not a tuneforge request-log row (needs integer status and latency_s)")
            continue
        log.statuses.append(f["status"])
        log.latencies.append(float(f["latency_s"]))
        log.times.append(str(f.get("time", "")))
        inputs, outputs = f.get("inputs") or [], f.get("outputs") or []
        if f["status"] == 200 and isinstance(inputs, list):
            log.inputs.extend(str(x) for x in inputs)
            log.outputs.extend(outputs if len(outputs) == len(inputs) else [None] * len(inputs))
    if bad:
        raise DataError(f"{len(bad)} bad row(s) in {path}; is it the file written by `tuneforge serve --log-requests`?", bad)
    return log


# ----------------------------------------------------------------------------- tests
def embedder_folder(name_or_path: str) -> Path:
    """The embedder's local folder, passed through the safe-loading gate (no pickle, no custom code)."""
    from tuneforge.models.loading import check_safe_folder

    folder = resolve_model(name_or_path).path
    check_safe_folder(folder)
    return folder


def embed(texts: list[str], model_name: str, batch_size: int = 32) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (the all-MiniLM-L6-v2 recipe): ``(N, H)``."""
    from tuneforge.evaluate.embed import get_encoder

    return get_encoder(str(embedder_folder(model_name))).sentence_embeddings(texts, batch_size=batch_size)


def embedding_drift(train: list[str], live: list[str], embedder: str, th: Thresholds, seed: int) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    # distinct texts only: a repeated input would sit in both the training and the scoring folds,
    # and the classifier would "detect" the repetition rather than a change of content
    train, live = sorted(set(train)), sorted(set(live))
    rng = np.random.default_rng(seed)
    n = min(len(train), len(live), th.max_samples)  # balanced: AUC 0.5 means "cannot tell them apart"
    a = [train[i] for i in rng.choice(len(train), n, replace=False)]
    b = [live[i] for i in rng.choice(len(live), n, replace=False)]
    x = embed(a + b, embedder)  # (2n, H)
    y = np.array([0] * n + [1] * n)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=cv, method="predict_proba")[:, 1]  # (2n,)
    u, p = mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater")
    auc = u / (n * n)
    drift = bool(p < th.alpha and auc >= th.auc)
    return {"test": "classifier two-sample test (logistic regression on embeddings, 5-fold ROC AUC)",
            "embedder": embedder, "n_per_side": n, "distinct_live": len(live), "auc": float(auc), "p_value": float(p), "drift": drift,
            "because": f"embedding classifier AUC {auc:.2f} (p={p:.3g})"}


def length_drift(train: list[int], live: list[int], th: Thresholds) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    res = ks_2samp(train, live)
    drift = bool(res.pvalue < th.alpha and res.statistic >= th.ks)
    return {"test": "two-sample Kolmogorov-Smirnov on input length in tokens", "ks": float(res.statistic),
            "p_value": float(res.pvalue), "train_median": float(np.median(train)), "live_median": float(np.median(live)),
            "drift": drift, "because": f"input length median {np.median(train):.0f} -> {np.median(live):.0f} tokens "
                                       f"(KS {res.statistic:.2f}, p={res.pvalue:.3g})"}


def label_shift(train: list[str], predicted: list[str], th: Thresholds) -> dict[str, Any]:
    from scipy.stats import chi2_contingency

    labels = sorted(set(train) | set(predicted))
    a, b = Counter(train), Counter(predicted)
    table = np.array([[a[k] for k in labels], [b[k] for k in labels]])  # (2, K)
    chi2, p, _, _ = chi2_contingency(table)
    v = math.sqrt(chi2 / table.sum() / max(1, min(table.shape) - 1))  # Cramer's V: 0 none, 1 total
    drift = bool(p < th.alpha and v >= th.cramers_v)
    share = {k: {"train": a[k] / len(train), "live": b[k] / max(1, len(predicted))} for k in labels}
    moved = max(labels, key=lambda k: abs(share[k]["live"] - share[k]["train"]))
    return {"test": "chi-square test of homogeneity, training labels vs predicted labels", "chi2": float(chi2),
            "p_value": float(p), "cramers_v": v, "shares": share, "drift": drift,
            "because": f"predicted label mix Cramer's V {v:.2f} (p={p:.3g}; most moved: {moved!r} "
                       f"{share[moved]['train']:.0%} in training -> {share[moved]['live']:.0%} live)"}


def _words(texts: list[str]) -> list[str]:
    return [w.lower() for t in texts for w in WORD.findall(t)]


def oov(train: list[str], held: list[str], live: list[str], th: Thresholds) -> dict[str, Any]:
    vocab = set(_words(train))

    def rate(texts: list[str]) -> float:
        words = _words(texts)
        return sum(w not in vocab for w in words) / max(1, len(words))

    live_rate, base = rate(live), rate(held) if held else 0.0
    drift = bool(live_rate - base >= th.oov_excess)
    return {"test": "share of live words unseen in training, against the held-out split's share",
            "live_rate": live_rate, "held_out_rate": base, "drift": drift,
            "because": f"{live_rate:.1%} of live words are unseen in training (held-out data: {base:.1%})"}


def serving(log: LiveLog) -> dict[str, Any]:
    n = len(log.statuses)
    lat = np.array(log.latencies) if log.latencies else np.zeros(1)
    return {"requests": n, "ok": sum(s == 200 for s in log.statuses),
            "client_error_rate": sum(400 <= s < 500 for s in log.statuses) / max(1, n),
            "server_error_rate": sum(s >= 500 for s in log.statuses) / max(1, n),
            "latency_s": {q: float(np.percentile(lat, int(q[1:]))) for q in ("p50", "p95", "p99")},
            "first": min(log.times, default=""), "last": max(log.times, default="")}


# ----------------------------------------------------------------------------- the report
def monitor(run_dir: Path | str, log_path: Path | str, *, out_dir: Path | str | None = None,
            embedder: str = "minilm-l6", seed: int = 0, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """Run every test, write ``monitor.json`` and ``monitor.md`` and return the report with its verdict."""
    th = thresholds or Thresholds()
    run_dir, log_path = Path(run_dir), Path(log_path)
    if embedder not in MODELS:  # a folder the user named is checked before any work (a name loads lazily)
        embedder_folder(embedder)
    task, train, held = _run_examples(run_dir)
    log = read_log(log_path)
    report: dict[str, Any] = {"run": str(run_dir), "log": str(log_path), "task": task.name,
                              "n_train": len(train), "n_live": len(log.inputs), "thresholds": asdict(th),
                              "serving": serving(log), "tests": {}}
    if len(log.inputs) >= th.min_live:
        train_texts = [e.text for e in train]
        length = lambda texts: [len(task.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]  # noqa: E731
        tests = report["tests"]
        tests["embedding"] = embedding_drift(train_texts, log.inputs, embedder, th, seed)
        tests["length"] = length_drift(length(train_texts), length(log.inputs), th)
        if task.predicts_labels:
            tests["labels"] = label_shift([e.target for e in train], [str(o) for o in log.outputs if o is not None], th)
        tests["oov"] = oov(train_texts, [e.text for e in held], log.inputs, th)
    report["verdict"] = verdict(report, th)
    out = Path(out_dir) if out_dir else run_dir / "monitor"
    report["paths"] = {"json": str(out / "monitor.json"), "md": str(out / "monitor.md")}
    write_json_atomic(out / "monitor.json", report)
    write_text_atomic(out / "monitor.md", render(report))
    return report


def verdict(report: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    if report["n_live"] < th.min_live:
        why = [f"only {report['n_live']} logged inputs; the tests need at least {th.min_live}"]
        return {"retrain": False, "reasons": why, "line": "re-train recommended: no because " + why[0]}
    flagged = [t["because"] for t in report["tests"].values() if t["drift"]]
    if flagged:
        return {"retrain": True, "reasons": flagged, "line": "re-train recommended: yes because " + "; ".join(flagged)}
    calm = [t["because"] for t in report["tests"].values()]
    return {"retrain": False, "reasons": calm,
            "line": "re-train recommended: no because no test found drift: " + "; ".join(calm)}


def render(report: dict[str, Any]) -> str:
    s = report["serving"]
    lines = [f"# Monitor: {report['run']}", "", f"**{report['verdict']['line']}**", "",
             f"{report['n_live']} live inputs from `{report['log']}` against {report['n_train']} training rows "
             f"({report['task']}).", "", "| test | statistic | p-value | drift |", "|---|---|---|---|"]
    for name, t in report["tests"].items():
        stat = {"embedding": f"AUC {t.get('auc', 0):.3f}", "length": f"KS {t.get('ks', 0):.3f}",
                "labels": f"Cramer's V {t.get('cramers_v', 0):.3f}",
                "oov": f"{t.get('live_rate', 0):.1%} vs {t.get('held_out_rate', 0):.1%} held-out"}[name]
        p = f"{t['p_value']:.3g}" if "p_value" in t else "-"
        lines.append(f"| {name}: {t['test']} | {stat} | {p} | {'yes' if t['drift'] else 'no'} |")
    lat = s["latency_s"]
    lines += ["", "## Serving", "",
              f"{s['requests']} requests ({s['first']} to {s['last']}): {s['ok']} answered, "
              f"client errors {s['client_error_rate']:.1%}, server errors {s['server_error_rate']:.1%}; "
              f"latency p50 {lat['p50'] * 1000:.0f} ms, p95 {lat['p95'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms.", ""]
    return "\n".join(lines)
