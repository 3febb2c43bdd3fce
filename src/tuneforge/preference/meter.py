"""Averages of per-step training metrics that a task gathers in ``loss`` and the loop logs."""

from __future__ import annotations


class Meter:
    """Weighted running means, emptied when read.

    >>> m = Meter(); m.add("reward", 1.0, 3); m.add("reward", 0.0, 1); m.pop()
    {'reward': 0.75}
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._weights: dict[str, float] = {}

    def add(self, name: str, value: float, weight: float = 1.0) -> None:
        self._sums[name] = self._sums.get(name, 0.0) + value * weight
        self._weights[name] = self._weights.get(name, 0.0) + weight

    def pop(self) -> dict[str, float]:
        out = {k: self._sums[k] / self._weights[k] for k in self._sums if self._weights[k] > 0}
        self._sums, self._weights = {}, {}
        return out
