"""One small name -> object registry, used for tasks, methods, metrics and data formats.

Why a registry and not an if-chain: a new task, method or metric is then one module plus one
``@REGISTRY.register("name")`` line, and a typo in a recipe fails with the list of valid names.
An entry may bring its config (``METHODS.register("lora", config=LoraMethod)``, as peft's
``register_peft_method`` does): the recipe builds its ``method`` union from those, so a plug-in's
settings are validated like a built-in's.

Third parties add their own through the ``tuneforge.plugins`` entry-point group: each entry point is a
module that registers itself on import. ``load_plugins`` imports the built-in modules and then every
entry point, once, before the first recipe is validated (``tuneforge.recipe`` calls it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

from tuneforge.errors import ConfigError

T = TypeVar("T")

#: the entry-point group a plug-in package advertises its modules under
PLUGIN_GROUP = "tuneforge.plugins"

#: modules that register the built-in tasks, methods, losses and metrics; named rather than imported
#: because they sit on higher layers (torch, peft) than this module and the recipe
BUILTIN_MODULES = (
    "tuneforge.tasks",
    "tuneforge.methods",
    "tuneforge.preference.losses",
    "tuneforge.evaluate.metrics_extra",
    "tuneforge.evaluate.metrics_text",
)


class Registry(Generic[T]):
    """A named collection of plug-ins of one kind (for example ``"method"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._configs: dict[str, Any] = {}
        _ALL.setdefault(kind, []).append(self)

    def register(self, name: str, *, config: Any = None) -> Callable[[T], T]:
        """Decorator: add ``obj`` under ``name`` (with its ``config``); refuses a duplicate or malformed name."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid {self.kind} name {name!r}: use letters, digits, '-' and '_'")

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            if config is not None:
                self._configs[name] = config
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {self.known()}") from None

    def config(self, name: str) -> Any:
        """The config registered with ``name`` (``None`` when it came without one)."""
        self.get(name)
        return self._configs.get(name)

    def configs(self) -> dict[str, Any]:
        """Every registered config by name, in name order."""
        return {name: self._configs[name] for name in self.names() if name in self._configs}

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's plug-in cleans up after itself)."""
        self._items.pop(name, None)
        self._configs.pop(name, None)

    def known(self) -> str:
        """The registered names as one line, for error messages."""
        return ", ".join(self.names()) or "none"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


_ALL: dict[str, list[Registry[Any]]] = {}
_loaded = False


def registry(kind: str) -> Registry[Any]:
    """The one registry of ``kind``: how the recipe reaches registries that live on higher layers."""
    found = _ALL.get(kind, [])
    if len(found) != 1:
        raise LookupError(f"expected one {kind!r} registry, found {len(found)} (call load_plugins first)")
    return found[0]


def load_plugins() -> None:
    """Import the built-in modules, then every module advertised under ``tuneforge.plugins``; once."""
    global _loaded
    if _loaded:
        return
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        ep.load()
    _loaded = True


def reload_plugins() -> None:
    """Look at the entry points again (a plug-in installed while this process runs, or a test's)."""
    global _loaded
    _loaded = False
    load_plugins()
