"""Baselines every fine-tune should be compared with, as plug-ins in the ``BASELINES`` registry.

Each baseline takes a ``BaselineContext`` (the run's task, its train and test splits, shared caches)
and returns a ``System``: predictions on (a subset of) the test items plus what it cost. The
question they answer is the user's: would prompting, retrieval or a classic model have been enough?

- ``zero-shot``: the untouched base model (for an encoder, the untrained head: chance level).
- ``few-shot``: a decoder prompted with ``k`` random training examples as earlier chat turns.
- ``retrieval``: the same, with the ``k`` training examples nearest to the input by MiniLM embeddings.
- ``knn``: a similarity-weighted vote of the ``k`` nearest training examples (MiniLM embeddings).
- ``tfidf``: TF-IDF word 1-2 grams + logistic regression (scikit-learn), the classic baseline.
- ``fine-tuned``: the run's tuned model.

Prompting baselines use the run's base model when it is a decoder, else ``prompt_model``
(default ``smollm2-135m-instruct``), predicting by label scoring so they can never answer off-label.
They can be run on a seeded subsample of the test items (``prompt_items``), because a 135M decoder
reads a k-shot prompt in about a second on a CPU; every comparison is then paired on that subsample.
Classification only for now.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.recipe import Recipe
from tuneforge.registry import Registry
from tuneforge.run.loading import load_run
from tuneforge.tasks.base import Example, Task


@dataclass
class BaselineContext:
    """What every baseline may use; ``cache`` holds costly shared things (embeddings, the prompt model)."""

    run_dir: Path
    recipe: Recipe
    task: Task
    train: list[Example]
    test: list[Example]
    k: int = 5
    seed: int = 0
    prompt_items: int | None = None
    prompt_model: str = "smollm2-135m-instruct"
    encoder_path: str | None = None  # sentence encoder folder; None = the embedded MiniLM
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return self.task.schema["labels"]

    def prompt_subset(self) -> list[int]:
        """Indices of the test items the (slow) prompting baselines score: all, or a seeded sample."""
        n = len(self.test)
        if self.prompt_items is None or self.prompt_items >= n:
            return list(range(n))
        rng = np.random.default_rng(self.seed)
        return sorted(rng.choice(n, size=self.prompt_items, replace=False).tolist())


@dataclass
class System:
    """One row of the comparison: predictions on ``items`` (indices into the test split) and costs."""

    name: str
    description: str
    items: list[int]
    predictions: list[dict[str, Any]]
    train_seconds: float
    latency_ms: float
    notes: list[str] = field(default_factory=list)


Baseline = Callable[[BaselineContext], System]
BASELINES: Registry[Baseline] = Registry("baseline")


def _probs_to_predictions(labels: list[str], probs: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for row in probs:  # (K,)
        best = int(np.argmax(row))
        out.append({"prediction": labels[best], "confidence": float(row[best]),
                    "probabilities": {label: float(p) for label, p in zip(labels, row)}})
    return out


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


# ----------------------------------------------------------------------------- the run's own models
def _run_model(ctx: BaselineContext, tuned: bool, run_dir: Path | None = None) -> System:
    run_dir = run_dir or ctx.run_dir
    loaded = load_run(run_dir, tuned=tuned)
    predictions, seconds = _timed(lambda: loaded.task.predict(loaded.model, ctx.test))
    items = list(range(len(ctx.test)))
    latency = 1000 * seconds / len(ctx.test)
    if tuned:
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
        train_s = float(report.get("training", {}).get("seconds") or 0.0)
        desc = f"{loaded.recipe.model} fine-tuned ({loaded.recipe.method.name})"
        name = "fine-tuned" if run_dir == ctx.run_dir else f"run:{run_dir.name}"
        return System(name, desc + ("" if run_dir == ctx.run_dir else f", run {run_dir}"), items, predictions,
                      train_s, latency)
    if loaded.resolved.kind == "encoder":
        desc = f"{ctx.recipe.model} with its untrained classification head (chance level)"
    else:
        desc = f"{ctx.recipe.model} prompted with the instruction only (label scoring)"
    return System("zero-shot", desc, items, predictions, 0.0, latency)


def other_run(ctx: BaselineContext, run_dir: Path) -> System:
    """Another finished run's tuned model on this run's test items (its test split must be the same rows)."""
    mine = json.loads((ctx.run_dir / "data" / "fingerprints.json").read_text(encoding="utf-8"))["splits"]["test"]
    theirs = json.loads((run_dir / "data" / "fingerprints.json").read_text(encoding="utf-8"))["splits"]["test"]
    if mine != theirs:
        from tuneforge.errors import UserError

        raise UserError(f"{run_dir} was tested on other rows than {ctx.run_dir} (data/fingerprints.json differs); "
                        "two runs can only be compared on the same test items")
    return _run_model(ctx, tuned=True, run_dir=run_dir)


@BASELINES.register("fine-tuned")
def fine_tuned(ctx: BaselineContext) -> System:
    return _run_model(ctx, tuned=True)


@BASELINES.register("zero-shot")
def zero_shot(ctx: BaselineContext) -> System:
    return _run_model(ctx, tuned=False)


# ----------------------------------------------------------------------------- embeddings
def _embeddings(ctx: BaselineContext) -> tuple[np.ndarray, np.ndarray, float]:
    """MiniLM sentence embeddings of train ``(N, D)`` and test ``(M, D)``; seconds spent on train (the index)."""
    if "embeddings" not in ctx.cache:
        from tuneforge.evaluate.embed import get_encoder

        enc = get_encoder(ctx.encoder_path)
        train, train_s = _timed(lambda: enc.sentence_embeddings([e.text for e in ctx.train]))
        test = enc.sentence_embeddings([e.text for e in ctx.test])
        ctx.cache["embeddings"] = (train, test, train_s)
    return ctx.cache["embeddings"]


def nearest(train: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` most cosine-similar rows of ``train`` for each query row, best first: ``(M, k)``."""
    sims = query @ train.T  # (M, N): rows are unit vectors
    k = min(k, train.shape[0])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (M, k) unordered
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


@BASELINES.register("knn")
def knn(ctx: BaselineContext) -> System:
    """Similarity-weighted vote of the k nearest training examples (no training, no prompt)."""
    train_e, test_e, index_s = _embeddings(ctx)
    start = time.perf_counter()
    idx = nearest(train_e, test_e, ctx.k)  # (M, k)
    sims = np.take_along_axis(test_e @ train_e.T, idx, axis=1)  # (M, k)
    label_ix = {label: i for i, label in enumerate(ctx.labels)}
    votes = np.zeros((len(ctx.test), len(ctx.labels)))  # (M, K)
    for m in range(len(ctx.test)):
        for j, s in zip(idx[m], sims[m]):
            votes[m, label_ix[ctx.train[j].target]] += max(float(s), 0.0) + 1e-9
    probs = votes / votes.sum(axis=1, keepdims=True)
    seconds = time.perf_counter() - start
    # latency: the vote plus embedding the query (test embeddings were computed in one batch with the index)
    embed_per_item = index_s / max(len(ctx.train), 1)
    latency = 1000 * (seconds / len(ctx.test) + embed_per_item)
    return System("knn", f"vote of the {ctx.k} nearest training examples (MiniLM embeddings)",
                  list(range(len(ctx.test))), _probs_to_predictions(ctx.labels, probs), index_s, latency)


# ----------------------------------------------------------------------------- classic baseline
@BASELINES.register("tfidf")
def tfidf(ctx: BaselineContext) -> System:
    """TF-IDF (word 1-2 grams, sublinear tf) + multinomial logistic regression, scikit-learn defaults otherwise."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(max_iter=2000, C=10.0))
    _, train_s = _timed(lambda: model.fit([e.text for e in ctx.train], [e.target for e in ctx.train]))
    raw, seconds = _timed(lambda: model.predict_proba([e.text for e in ctx.test]))  # (M, K') in model.classes_
    probs = np.zeros((len(ctx.test), len(ctx.labels)))
    for j, cls in enumerate(model.classes_):
        probs[:, ctx.labels.index(cls)] = raw[:, j]
    return System("tfidf", "TF-IDF word 1-2 grams + logistic regression (C=10)", list(range(len(ctx.test))),
                  _probs_to_predictions(ctx.labels, probs), train_s, 1000 * seconds / len(ctx.test))


# ----------------------------------------------------------------------------- prompting a decoder
def _prompt_task(ctx: BaselineContext) -> tuple[Any, Any, str]:
    """(decoder classification task, decoder model, its name): the run's base model if a decoder, else ``prompt_model``."""
    if "prompt" not in ctx.cache:
        from tuneforge.models.loading import load_model, load_tokenizer
        from tuneforge.models.resolve import resolve_model
        from tuneforge.tasks.base import get_task

        name = ctx.recipe.model
        resolved = resolve_model(name, allow_hub=ctx.recipe.allow_hub)
        if resolved.kind != "decoder":
            name = ctx.prompt_model
            resolved = resolve_model(name)
        recipe = ctx.recipe.model_copy(update={"model": name,
                                               "train": ctx.recipe.train.model_copy(update={"max_length": 2048})})
        task = get_task(recipe, load_tokenizer(resolved.path), "decoder")
        task.schema = ctx.task.schema
        model = load_model(resolved, head="causal_lm").eval()
        ctx.cache["prompt"] = (task, model, name)
    return ctx.cache["prompt"]


def shots_prompt(task: Any, query: str, shots: list[Example]) -> list[dict[str, str]]:
    """The task's prompt for ``query`` with each shot as an earlier user/assistant exchange."""
    final = task._messages(query)
    turns: list[dict[str, str]] = []
    for shot in shots:
        turns += [task._messages(shot.text)[-1], {"role": "assistant", "content": shot.target}]
    return final[:-1] + turns + final[-1:]


def _prompting(ctx: BaselineContext, name: str, choose: Callable[[int], list[int]], how: str,
               index_s: float) -> System:
    task, model, model_name = _prompt_task(ctx)
    items = ctx.prompt_subset()
    prompts = [shots_prompt(task, ctx.test[i].text, [ctx.train[j] for j in choose(i)]) for i in items]
    probs, seconds = _timed(lambda: task.decoder_label_probs(model, prompts))
    notes = [] if len(items) == len(ctx.test) else [f"scored on a seeded sample of {len(items)} of {len(ctx.test)} test items"]
    return System(name, f"{model_name} prompted with {how} (label scoring)", items,
                  _probs_to_predictions(ctx.labels, np.asarray(probs)), index_s, 1000 * seconds / len(items), notes)


@BASELINES.register("zero-shot-prompt")
def zero_shot_prompt(ctx: BaselineContext) -> System:
    return _prompting(ctx, "zero-shot-prompt", lambda i: [], "the instruction only", 0.0)


@BASELINES.register("few-shot")
def few_shot(ctx: BaselineContext) -> System:
    rng = np.random.default_rng(ctx.seed)
    draws = {i: rng.choice(len(ctx.train), size=min(ctx.k, len(ctx.train)), replace=False).tolist()
             for i in range(len(ctx.test))}
    return _prompting(ctx, "few-shot", draws.__getitem__, f"{ctx.k} random training examples", 0.0)


@BASELINES.register("retrieval")
def retrieval(ctx: BaselineContext) -> System:
    train_e, test_e, index_s = _embeddings(ctx)
    idx = nearest(train_e, test_e, ctx.k)  # (M, k)
    # nearest last: the closest example sits right before the query, where a small model attends most
    return _prompting(ctx, "retrieval", lambda i: idx[i].tolist()[::-1],
                      f"the {ctx.k} nearest training examples (MiniLM)", index_s)
