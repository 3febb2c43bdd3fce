"""One small name -> object registry, used for tasks, methods, metrics and data formats.

Why a registry and not an if-chain: a new task, method or metric is then one module plus one
``@REGISTRY.register("name")`` line, and a typo in a recipe fails with the list of valid names.
Third parties can add their own through the ``tuneforge.plugins`` entry-point group (each entry
point is a module that registers itself on import).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tuneforge.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plug-ins of one kind (for example ``"method"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: add ``obj`` under ``name``; refuses a duplicate or malformed name."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid {self.kind} name {name!r}: use letters, digits, '-' and '_'")

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def load_plugins() -> None:
    """Import every module advertised under the ``tuneforge.plugins`` entry-point group."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="tuneforge.plugins"):
        ep.load()
