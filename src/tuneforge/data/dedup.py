"""Exact and near duplicates, within one data set and across two (train/test leakage).

Exact duplicates compare a normalised key (Unicode NFKC, case-folded, whitespace collapsed), so
``"Play music "`` and ``"play  music"`` are the same row. Near duplicates use MinHash with
locality-sensitive hashing (``datasketch``): each text becomes the set of its word 3-grams (or
character 5-grams for texts of fewer than 3 words), candidates come from the LSH index in about
linear time, and each candidate pair is kept only when its exact Jaccard similarity reaches
``threshold``. Pairwise comparison would be 95 million pairs on SNIPS; LSH finds the same pairs
in seconds.
"""

from __future__ import annotations

from tuneforge.extras import require

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """The key two texts must share to count as exact duplicates."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def shingles(text: str) -> set[bytes]:
    words = _WORD.findall(normalise(text))
    if len(words) >= 3:
        return {" ".join(words[i : i + 3]).encode() for i in range(len(words) - 2)}
    joined = " ".join(words)
    return {joined[i : i + 5].encode() for i in range(max(1, len(joined) - 4))}


@dataclass
class DuplicateGroup:
    """Indices of rows that are the same (``exact``) or nearly the same text; the first is kept by ``clean``."""

    rows: list[int]
    exact: bool
    similarity: float


def exact_groups(texts: Sequence[str]) -> list[DuplicateGroup]:
    by_key: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        by_key.setdefault(normalise(t), []).append(i)
    return [DuplicateGroup(rows, True, 1.0) for rows in by_key.values() if len(rows) > 1]


def _minhashes(sets: Sequence[set[bytes]], num_perm: int, seed: int) -> list:
    MinHash = require("datasketch", "near-duplicate detection").MinHash

    return list(MinHash.bulk([list(s) for s in sets], num_perm=num_perm, seed=seed))


def near_pairs(texts: Sequence[str], others: Sequence[str] | None = None, *, threshold: float = 0.8,
               num_perm: int = 64, seed: int = 1) -> list[tuple[int, int, float]]:
    """``(i, j, jaccard)`` for near-identical texts whose normalised forms differ.

    Without ``others``: pairs ``i < j`` inside ``texts``. With ``others``: ``i`` indexes ``texts``
    and ``j`` indexes ``others`` (leakage between two files). The LSH index is queried at a
    threshold 0.2 below ``threshold``, because banding misses pairs just above its threshold, and
    every candidate is then checked with its exact Jaccard similarity, so the result has neither
    the index's misses nor its false alarms near the threshold.
    """
    MinHashLSH = require("datasketch", "near-duplicate detection").MinHashLSH

    lsh = MinHashLSH(threshold=max(0.3, threshold - 0.2), num_perm=num_perm)
    base_sets = [shingles(t) for t in texts]
    base = _minhashes(base_sets, num_perm, seed)
    for i, m in enumerate(base):
        lsh.insert(i, m, check_duplication=False)
    query_sets = base_sets if others is None else [shingles(t) for t in others]
    queries = base if others is None else _minhashes(query_sets, num_perm, seed)
    query_texts = texts if others is None else others
    pairs = []
    for j, m in enumerate(queries):
        for i in lsh.query(m):
            if others is None and i >= j:
                continue
            if normalise(texts[i]) == normalise(query_texts[j]):
                continue  # an exact duplicate, reported as such
            a, b = base_sets[i], query_sets[j]
            sim = len(a & b) / max(1, len(a | b))
            if sim >= threshold:
                pairs.append((i, j, sim))
    return sorted(pairs)


def near_groups(texts: Sequence[str], *, threshold: float = 0.8) -> list[DuplicateGroup]:
    """Connected components of near-duplicate pairs (union-find), each with its lowest similarity."""
    pairs = near_pairs(texts, threshold=threshold)
    parent = np.arange(len(texts))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    for i, j, _ in pairs:
        parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    lowest: dict[int, float] = {}
    for i, j, sim in pairs:
        root = find(i)
        lowest[root] = min(lowest.get(root, 1.0), sim)
    for i in {x for p in pairs for x in p[:2]}:
        groups.setdefault(find(i), []).append(i)
    return [DuplicateGroup(sorted(rows), False, lowest[root]) for root, rows in groups.items()]


def leaks(train: Sequence[str], test: Sequence[str], *, threshold: float = 0.8) -> list[tuple[int, int, float]]:
    """``(test_index, train_index, similarity)`` for test rows that also appear (or nearly) in train."""
    keys: dict[str, int] = {}
    for i, t in enumerate(train):
        keys.setdefault(normalise(t), i)
    found = {j: (j, keys[normalise(t)], 1.0) for j, t in enumerate(test) if normalise(t) in keys}
    for i, j, sim in near_pairs(train, test, threshold=threshold):
        if j not in found:
            found[j] = (j, i, sim)
    return sorted(found.values())
