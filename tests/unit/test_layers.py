"""Import layers of raysearch and analysis, read from the source with ``ast`` (nothing is
imported): every module under raysearch/ and analysis/, its imports at module level
(run when the module is imported; ``if TYPE_CHECKING:`` blocks excluded) and inside
functions (run when called, so free to import anything).

- ``raysearch.cli`` imports neither Ray nor torch at module level, directly or through
  the raysearch modules it imports at module level: ``raysearch --help`` and every check
  before a run stay fast.
- ``analysis`` imports none of raysearch's training and run modules at module level,
  directly or indirectly: reports and tables are read where nothing trains.
- No import cycle among the modules at module level.

A current violation that is accepted for now is one entry in ``ALLOWED`` with its reason;
any other violation fails with the chain of imports that makes it.
"""

from __future__ import annotations

import ast
import os

import pytest
from helpers.specs import REPO

PACKAGES = ("raysearch", "analysis")
HEAVY = ("ray", "torch", "torchvision")
# raysearch's training and run modules (packages stand for everything below them).
RUN_MODULES = ("raysearch.run", "raysearch.train", "raysearch.methods", "raysearch.components", "raysearch.data")

# The layers, top down: what the modules of each layer may import at module level (their
# own layer included). A layer names packages or modules; the first layer that holds a
# module is its layer.
LAYERS: dict[str, tuple[str, ...]] = {
    "raysearch.cli": ("raysearch.cli", "raysearch.config", "raysearch.store", "raysearch.data"),
    "raysearch.run": ("raysearch.run", "raysearch.train", "raysearch.methods", "raysearch.components",
                      "raysearch.data", "raysearch.metrics", "raysearch.fast_metrics", "raysearch.config",
                      "raysearch.store", "analysis"),
    "raysearch.train": ("raysearch.train", "raysearch.methods", "raysearch.components", "raysearch.data",
                        "raysearch.metrics", "raysearch.fast_metrics", "raysearch.config", "raysearch.store"),
    "raysearch.methods": ("raysearch.methods", "raysearch.components", "raysearch.data", "raysearch.metrics",
                          "raysearch.config"),
    "raysearch.components": ("raysearch.components", "raysearch.config"),
    "raysearch.data": ("raysearch.data", "raysearch.config"),
    "raysearch.metrics": ("raysearch.metrics", "raysearch.fast_metrics", "raysearch.config"),
    "raysearch.fast_metrics": ("raysearch.fast_metrics", "raysearch.metrics", "raysearch.config"),
    "raysearch.store": ("raysearch.store", "raysearch.config"),
    "raysearch.config": ("raysearch.config",),
    "analysis": ("analysis", "raysearch.config", "raysearch.store"),
}

# Module-level imports (importer, imported) that break a rule above and are accepted
# for now, each with its reason. Empty: every rule holds.
ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, str]:
    """Dotted name -> path of every module of PACKAGES (a package by its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


def _imports(name: str, path: str) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import of one module. ``from p import
    x`` imports the module ``p.x`` where there is one, else ``p``."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the package, one level up per extra dot
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else base, top))
            visit(child, inner)

    visit(tree, True)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}
# Module-level imports among raysearch and analysis, less the accepted ones.
EDGES = {name: sorted({t for t, top in imps if top and t in MODULES and t != name and (name, t) not in ALLOWED})
         for name, imps in IMPORTS.items()}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _chain(start: str, bad) -> list[str] | None:
    """The shortest module-level import chain from ``start`` to a module for which
    ``bad(module)`` holds (the last element: that module), or None."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        module = queue.pop(0)
        if module != start and bad(module):
            return paths[module]
        for target in EDGES.get(module, ()):
            if target not in paths:
                paths[target] = paths[module] + [target]
                queue.append(target)
    return None


def _heavy_imports(module: str) -> list[str]:
    """The heavy packages (HEAVY) that ``module`` imports at module level, less ALLOWED."""
    imported = {t.split(".")[0] for t, top in IMPORTS.get(module, ()) if top and _under(t, HEAVY)}
    return sorted(imported - {b for a, b in ALLOWED if a == module})


def test_the_graph_is_read_from_every_module_including_imports_inside_functions():
    """Guards the other tests against passing on an empty or misread graph."""
    assert {"raysearch.cli", "raysearch.train.loop", "analysis", "analysis.report", "raysearch.methods.base"} <= set(MODULES)
    assert "torch" in [t for t, top in IMPORTS["raysearch.train.loop"] if top]
    assert "raysearch.store.results" in EDGES["analysis.load"]
    inside = {(m, t) for m, imps in IMPORTS.items() for t, top in imps if not top}
    assert ("analysis.importance", "raysearch.config.space") in inside  # imported where it is used
    assert not [k for k in ALLOWED if k[0] not in MODULES], "an ALLOWED entry names no module"


def test_cli_imports_neither_ray_nor_torch_at_module_level():
    assert not _heavy_imports("raysearch.cli")
    chain = _chain("raysearch.cli", lambda m: bool(_heavy_imports(m)))
    assert chain is None, f"{' -> '.join(chain)} imports {_heavy_imports(chain[-1])} at module level"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _under(m, ("analysis",))))
def test_analysis_never_imports_the_training_and_run_modules(module):
    chain = _chain(module, lambda m: _under(m, RUN_MODULES))
    assert chain is None, f"{' -> '.join(chain)}: analysis imports a training or run module at module level"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in ("raysearch", "analysis")))
def test_each_module_imports_only_its_own_layer_and_those_below(module):
    """cli -> run -> train -> methods -> components / data -> config; store -> config;
    analysis -> store / config: the folders are the layers."""
    layer = next((name for name in LAYERS if _under(module, (name,))), None)
    assert layer is not None, f"{module} is in no layer of LAYERS"
    wrong = [t for t in EDGES[module] if not (t == "raysearch" or _under(t, LAYERS[layer]))]  # raysearch: __version__
    assert not wrong, f"{module} ({layer}) imports {wrong} at module level"


def test_no_import_cycle_at_module_level():
    """Tarjan's strongly connected components of the module-level import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in EDGES[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(EDGES):
        if module not in index:
            visit(module)
    described = [" | ".join(f"{m} -> {[t for t in EDGES[m] if t in c]}" for m in c) for c in cycles]
    assert not cycles, "module-level import cycles: " + "; ".join(described)
