"""The layers point one way: read from the code's own imports (ast; nothing is imported or run).

Every import of ``src/tuneforge`` counts, at module level or inside a function, so a cycle cannot be
hidden by moving its import into a function body. Three rules of docs/architecture.md are checked:
no import cycle spans two top-level packages (a top-level module is its own package), no module
imports another module's private name, and nothing below ``tuneforge.run`` reaches up into the
public API or the run pipeline.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "tuneforge"

# Modules that sit on the run layer or above it: they may compose the pipeline.
ABOVE_RUN = ("tuneforge.run", "tuneforge.api", "tuneforge.cli", "tuneforge.serve", "tuneforge.deploy",
             "tuneforge.studio")
# The package's own __init__ exposes the API lazily to its users; it is not a layer below run.
FACADE = ("tuneforge",)


def module_paths() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_paths()


def imports_of(module: str) -> Iterator[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import statement anywhere in the module."""
    path = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join(here + ([base] if base else []))
            yield from ((base, alias.name) for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import mod`` points at ``pkg.mod``)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, name in imports_of(module):
            candidate = f"{target}.{name}" if name else target
            dest = candidate if candidate in MODULES else target if target in MODULES else None
            if dest is not None and dest != module:
                graph[module].add(dest)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; only components of more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def top_package(module: str) -> str:
    """``tuneforge.train.loop`` -> ``train``; a top-level module such as ``tuneforge.api`` is its own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def is_below_run(module: str) -> bool:
    return module not in FACADE and not any(module == m or module.startswith(m + ".") for m in ABOVE_RUN)


def test_the_graph_sees_function_level_imports() -> None:
    """A guard on the checker itself: the package's lazy ``__init__`` imports the API inside a function."""
    assert "tuneforge.api" in import_graph()["tuneforge"]


def test_no_import_cycle_spans_two_packages() -> None:
    graph = import_graph()
    spanning = [c for c in strongly_connected(graph) if len({top_package(m) for m in c}) > 1]
    described = ["; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in spanning]
    assert not spanning, "import cycles across packages:\n" + "\n".join(described)


def test_no_private_name_is_imported_from_another_module() -> None:
    private = [f"{module} imports {target}.{name}"
               for module in MODULES for target, name in imports_of(module)
               if name and name.startswith("_") and not name.startswith("__")
               and target.startswith("tuneforge") and target != module]
    assert not private, "\n".join(private)


def test_nothing_below_run_imports_the_api_or_the_pipeline() -> None:
    upward = ("tuneforge.api", "tuneforge.run.pipeline")
    graph = import_graph()
    offenders = [f"{m} -> {t}" for m in MODULES if is_below_run(m) for t in sorted(graph[m]) if t in upward]
    assert not offenders, "\n".join(offenders)


def test_the_data_and_model_layers_reach_no_run_or_loop() -> None:
    """``data/`` and ``models/`` sit below training and runs: a data tool that needs a trained model (active
    learning, the synthetic-data label check) is handed one by the run layer (``run.loading.label_model``)."""
    above = ("tuneforge.run", "tuneforge.train", "tuneforge.api", "tuneforge.cli", "tuneforge.serve",
             "tuneforge.deploy", "tuneforge.studio")
    graph = import_graph()
    low = [m for m in MODULES if top_package(m) in ("data", "models")]
    offenders = [f"{m} -> {t}" for m in low for t in sorted(graph[m])
                 if any(t == a or t.startswith(a + ".") for a in above)]
    assert low and not offenders, "\n".join(offenders)
