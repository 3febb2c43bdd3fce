"""``tuneforge data select`` / ``data merge``: choose what to label next, and bring the labels back.

Given a finished classification run and an unlabelled pool, every pool row gets the run model's
label probabilities ``p`` (sorted descending) and an uncertainty score from ``STRATEGIES``
(Settles, "Active Learning Literature Survey", 2009, section 3.1), higher meaning "label me":

- ``least_confidence``: ``1 - p[0]``;
- ``margin``: ``-(p[0] - p[1])`` (a small gap between the two best labels is uncertain);
- ``entropy``: ``-sum(p log p)``;
- ``random``: a seeded random score, the baseline every strategy must beat.

``diversity="kmeans"`` guards against picking twenty near-identical uncertain rows: the
``pool_factor * n`` most uncertain rows are clustered into ``n`` groups (k-means on their
embeddings, :mod:`tuneforge.data.embed`) and the most uncertain row of each group is taken.

The batch is written with an empty ``label`` field for annotators, plus the model's guess and the
scores. ``merge_labelled`` appends the rows a person labelled to the training file (as a new
file) and refuses rows still unlabelled or labelled with an unknown label, naming their lines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.readers import read_records
from tuneforge.errors import DataError, UserError
from tuneforge.registry import Registry
from tuneforge.files import write_jsonl_atomic

Scorer = Callable[[np.ndarray, np.random.Generator], np.ndarray]
STRATEGIES: Registry[Scorer] = Registry("selection strategy")
HELPER_FIELDS = ("suggested_label", "uncertainty", "strategy", "pool_line")


@STRATEGIES.register("least_confidence")
def least_confidence(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - p.max(axis=1)  # (N,)


@STRATEGIES.register("margin")
def margin(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    top = -np.sort(-p, axis=1)  # (N, L), descending
    return -(top[:, 0] - (top[:, 1] if p.shape[1] > 1 else 0.0))


@STRATEGIES.register("entropy")
def entropy(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)


@STRATEGIES.register("random")
def random_scores(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.random(len(p))


def score_pool(probabilities: list[list[float]], strategy: str, seed: int = 0) -> np.ndarray:
    """``(N,)`` scores, higher = label it sooner."""
    return STRATEGIES.get(strategy)(np.asarray(probabilities, dtype=np.float64), np.random.default_rng(seed))


def rank_texts(scores: np.ndarray, *, n: int, seed: int = 0, diversity: str | None = None, vectors: Any = None,
               pool_factor: int = 5) -> list[int]:
    """Indices of the ``n`` rows to label, most useful first."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    if diversity is None or n >= len(order):
        return order[:n]
    if diversity != "kmeans":
        raise UserError(f"unknown diversity {diversity!r}; use kmeans or none")
    from sklearn.cluster import KMeans

    top = order[: max(n, pool_factor * n)]
    labels = KMeans(n_clusters=n, n_init=3, random_state=seed).fit_predict(vectors[top])
    picked: dict[int, int] = {}
    for i, cluster in zip(top, labels):
        picked.setdefault(int(cluster), i)  # ``top`` is most-uncertain first, so the first seen is the best
    return sorted(picked.values(), key=lambda i: (-float(scores[i]), i))


def select_for_labelling(labels: list[str], probabilities: Callable[[list[str]], list[list[float]]],
                         pool_file: Path | str, output: Path | str, *, n: int = 20, strategy: str = "entropy",
                         diversity: str | None = None, embedder: str = "tfidf", seed: int = 0,
                         text_field: str = "text") -> list[dict[str, Any]]:
    """Score the pool with a trained classifier (``probabilities(texts)``, one row per text in ``labels`` order:
    ``tuneforge.run.loading.label_model`` opens a run as one) and write the ``n`` chosen rows for annotation."""
    from tuneforge.data.embed import embed

    records = read_records(Path(pool_file))
    bad = [f"{r.where()}: missing or empty {text_field!r}" for r in records
           if not isinstance(r.fields.get(text_field), str) or not r.fields[text_field].strip()]
    if bad:
        raise DataError(f"{len(bad)} pool row(s) have no text", bad)
    texts = [r.fields[text_field] for r in records]
    probs = probabilities(texts)
    vectors = embed(texts, embedder) if diversity else None
    scores = score_pool(probs, strategy, seed)
    chosen = rank_texts(scores, n=n, seed=seed, diversity=diversity, vectors=vectors)
    rows = []
    for i in chosen:
        best = int(np.argmax(probs[i]))
        rows.append({**records[i].fields, "label": "", "suggested_label": labels[best],
                     "uncertainty": round(float(scores[i]), 4),
                     "strategy": strategy + (f"+{diversity}" if diversity else ""), "pool_line": records[i].line})
    write_jsonl_atomic(Path(output), rows)
    return rows


def merge_labelled(train_file: Path | str, labelled_file: Path | str, output: Path | str, *,
                   label_field: str = "label", labels: list[str] | None = None) -> int:
    """Write ``output`` = the training rows + the labelled batch (helper fields removed); returns rows added."""
    train_file, output = Path(train_file), Path(output)
    if output.resolve() == train_file.resolve():
        raise UserError(f"refusing to overwrite {train_file}; merge writes a new file (pick another -o)")
    train = read_records(train_file)
    known = set(labels or {str(r.fields.get(label_field)) for r in train})
    batch = read_records(Path(labelled_file))
    problems = []
    for r in batch:
        value = r.fields.get(label_field)
        if value is None or not str(value).strip():
            problems.append(f"{r.where()}: not labelled yet (empty {label_field!r})")
        elif str(value) not in known:
            problems.append(f"{r.where()}: unknown label {value!r} (known: {', '.join(sorted(known))})")
    if problems:
        raise DataError(f"{len(problems)} row(s) of {labelled_file} cannot be merged; label them and re-run", problems)
    added = [{k: v for k, v in r.fields.items() if k not in HELPER_FIELDS} for r in batch]
    write_jsonl_atomic(output, [*(r.fields for r in train), *added])
    return len(added)
