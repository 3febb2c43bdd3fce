"""Sentence vectors for neighbour-based checks (label noise) and diversity sampling (active learning).

Two embedders in ``EMBEDDERS``, both returning L2-normalised ``(N, D)`` rows so a dot product is
a cosine similarity:

- ``tfidf``: word 1-2-gram TF-IDF, kept sparse (scipy CSR). Needs no model and embeds SNIPS (14k
  rows) in half a second; its neighbours come from sparse products in a few seconds, which is
  what keeps ``data audit`` within its time budget. (A truncated SVD to dense vectors was tried
  and took 9 to 17 s on the same rows.)
- ``minilm``: the embedded all-MiniLM-L6-v2 encoder with mean pooling over real tokens, the way
  sentence-transformers pools it. Better neighbours for paraphrases that share few words; about
  a minute for 14k rows on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tuneforge.registry import Registry

EMBEDDERS: Registry[Callable[[Sequence[str]], Any]] = Registry("embedder")


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@EMBEDDERS.register("tfidf")
def embed_tfidf(texts: Sequence[str]) -> Any:
    """Sparse ``(N, V)`` TF-IDF rows, already L2-normalised by scikit-learn."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts).astype(np.float32)


@EMBEDDERS.register("minilm")
def embed_minilm(texts: Sequence[str], model: str = "minilm-l6", batch_size: int = 64) -> np.ndarray:
    from tuneforge.evaluate.embed import get_encoder
    from tuneforge.models.resolve import resolve_model

    return get_encoder(str(resolve_model(model).path)).sentence_embeddings(list(texts), batch_size=batch_size)


def embed(texts: Sequence[str], method: str = "tfidf") -> Any:
    """``(N, D)`` unit vectors for ``texts`` with the named embedder (dense, or sparse for tfidf)."""
    return EMBEDDERS.get(method)(texts)


def nearest_neighbours(vectors: Any, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(N, k)`` and cosine similarities ``(N, k)`` of each row's k nearest other rows.

    Exact (brute force in row blocks): at 14k rows a block product is cheaper than building an
    approximate index.
    """
    n = vectors.shape[0]
    k = min(k, n - 1)
    idx = np.zeros((n, k), dtype=np.int64)
    sims = np.zeros((n, k), dtype=np.float32)
    if k < 1:
        return idx, sims
    for start in range(0, n, chunk):
        block = vectors[start : start + chunk] @ vectors.T  # (C, N)
        block = np.asarray(block.toarray() if hasattr(block, "toarray") else block, dtype=np.float32)
        rows = np.arange(block.shape[0])
        block[rows, rows + start] = -np.inf  # a row is not its own neighbour
        top = np.argpartition(-block, k, axis=1)[:, :k]  # (C, k), unordered
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1)
        idx[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        sims[start : start + chunk] = np.take_along_axis(top_sims, order, axis=1)
    return idx, sims
