"""Figures for the reports, as PNG bytes (matplotlib, Agg backend: no display needed).

Each function takes the plain numbers that are also written to ``report.json``, so a figure never
shows anything the JSON does not hold.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def loss_curve(curve: dict[str, Any]) -> bytes:
    """Training loss per step (and its moving average) with validation loss/metrics at their steps."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(curve["steps"], curve["loss"], color="#bbbbbb", lw=0.8, label="train loss")
    if curve.get("smoothed"):
        ax.plot(curve["steps"], curve["smoothed"], color="#1f77b4", lw=1.6, label="train loss (moving average)")
    if curve.get("val_steps"):
        ax.plot(curve["val_steps"], curve["val_loss"], "o-", color="#d62728", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def confusion(labels: list[str], matrix: list[list[int]]) -> bytes:
    """Confusion matrix: rows are true labels, columns predicted; counts written in the cells."""
    size = max(4.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def reliability(cal: dict[str, Any]) -> bytes:
    """Reliability diagram: accuracy against mean confidence per confidence bin, with the diagonal."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    bins = [b for b in cal["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], "--", color="#888888", lw=1, label="perfect calibration")
    ax.bar([b["low"] for b in cal["bins"]], [b["accuracy"] if b["count"] else 0 for b in cal["bins"]],
           width=[b["high"] - b["low"] for b in cal["bins"]], align="edge", alpha=0.35, color="#1f77b4",
           edgecolor="#1f77b4", label="accuracy in bin")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="#1f77b4")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE = {cal['ece']:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def learning_curve(curve: dict[str, Any]) -> bytes:
    """Score against training examples (log x), with the fitted power law extended to more data."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    ax.plot(curve["n_train"], curve["score"], "o", color="#1f77b4", label="measured")
    fit = curve.get("fit")
    if fit:
        ax.plot(fit["x"], fit["y"], "-", color="#ff7f0e",
                label=f"fit: {fit['a']:.3f} {'-' if fit['sign'] < 0 else '+'} {fit['b']:.3g} n^-{fit['c']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(curve.get("metric", "score"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)


def systems(rows: list[dict[str, Any]], metric: str) -> bytes:
    """Quality (with 95% interval) against inference latency, one point per compared system."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for row in rows:
        lo, hi = row["ci"][metric]
        v = row[metric]
        ax.errorbar([max(row["latency_ms"], 1e-3)], [v], yerr=[[v - lo], [hi - v]], fmt="o", capsize=3)
        ax.annotate(row["name"], (max(row["latency_ms"], 1e-3), v), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("inference latency per item (ms, log)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def sweep_history(trials: list[dict[str, Any]], metric: str) -> bytes:
    """Each trial's validation score in order, pruned trials marked, with the running best."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    done = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t["state"] == "PRUNED" and t.get("last_value") is not None]
    ax.plot([t["number"] for t in done], [t["value"] for t in done], "o", color="#1f77b4", label="complete")
    ax.plot([t["number"] for t in pruned], [t["last_value"] for t in pruned], "x", color="#d62728",
            label="pruned (last reported)")
    best, xs, ys = None, [], []
    for t in done:
        best = t["value"] if best is None else max(best, t["value"])
        xs.append(t["number"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="#2ca02c", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
