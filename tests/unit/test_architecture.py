"""The import structure the architecture relies on, checked from the source (AST) and, for the
purity of `durable_core`, by importing it in a subprocess.

* **Purity of durable_core** (`docs/architecture.md`: the rules do no I/O and know no shell):
  no module of `durable_core` imports, anywhere in it (module level, inside functions, and under
  ``if TYPE_CHECKING:`` too, since a type-level dependency on the shell is a layering leak as
  well), asyncio, starlette, uvicorn, lmdb, aiohttp, httpx, uvloop, threading, socket or
  anything of `proxy`; from `handlers_sdk` it may use only the wire contract (`protocol`,
  `ids`, `replay`, `errors`). Two subprocess checks back this up. Importing `handlers_sdk.protocol`
  runs `handlers_sdk/__init__.py`, which imports the SDK's server side (asyncio, httpx), so:

  1. with `handlers_sdk` stubbed as a bare package (its ``__init__`` not run), every
     `durable_core` module imports with *all* the names above blocked by a meta-path finder,
     and the only SDK modules loaded are the allowed four;
  2. with the real `handlers_sdk` package, every `durable_core` module imports with the
     proxy-side names (lmdb, starlette, uvicorn, aiohttp, uvloop, httptools, proxy) blocked.

* **No import cycles** among the modules of `proxy`, `handlers_sdk` and `durable_core`: the graph
  of runtime imports (module level and function-local; ``if TYPE_CHECKING:`` blocks ignored),
  relative imports and ``from package import module`` resolved, importing ``a.b.c`` also
  counting as importing the package ``a.b`` when it has an ``__init__.py`` (unless the importer
  is inside it, where it is already initialized). The test fails listing every cycle.

* **Layering of proxy/**: `proxy/store` imports nothing of `proxy/engine`, `proxy/api` or
  `proxy/tools`; `proxy/engine` nothing of `proxy/api` or `proxy/tools`; `proxy/api` nothing of
  `proxy/tools`; and the server's graph (`proxy.serve` and every module of `proxy.api`,
  `proxy.engine`, `proxy.store`, followed transitively) never reaches `proxy.tools`.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "handlers_sdk", "durable_core")
#: What durable_core must never import (top-level module names).
FORBIDDEN = frozenset(
    {"asyncio", "starlette", "uvicorn", "lmdb", "aiohttp", "httpx", "uvloop", "threading", "socket", "proxy"}
)
#: The proxy's own dependencies (and the proxy itself): blocked even with the real SDK package.
PROXY_SIDE = frozenset({"lmdb", "starlette", "uvicorn", "aiohttp", "uvloop", "httptools", "watchfiles", "proxy"})
#: The SDK modules durable_core may use: the wire contract.
SDK_ALLOWED = frozenset({"handlers_sdk.protocol", "handlers_sdk.ids", "handlers_sdk.replay", "handlers_sdk.errors"})


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute module name."""

    importer: str
    target: str
    line: int
    type_checking: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the three packages: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _walk(node: ast.AST, type_checking: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import under `node`, with whether it sits in an ``if TYPE_CHECKING:`` body."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, type_checking
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for guarded in node.body:
            yield from _walk(guarded, True)
        for other in node.orelse:
            yield from _walk(other, type_checking)
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, type_checking)


def _base(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    is_package = modules()[importer].name == "__init__.py"
    parts = importer.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


@cache
def imports_of(importer: str) -> tuple[Import, ...]:
    """Every import in `importer`, resolved: ``from pkg import mod`` names ``pkg.mod`` when that
    is a module of the tree, else ``pkg``."""
    tree = ast.parse(modules()[importer].read_text(encoding="utf-8"))
    found: list[Import] = []
    for node, type_checking in _walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _base(importer, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in node.names]
        found.extend(Import(importer, target, node.lineno, type_checking) for target in targets)
    return tuple(found)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


@cache
def graph() -> dict[str, frozenset[str]]:
    """Runtime imports between modules of the tree (TYPE_CHECKING imports left out).

    Importing ``a.b.c`` runs the ``__init__`` of every package on the way; those that are
    modules of the tree count as imported too, except the importer's own ancestors.
    """
    edges: dict[str, frozenset[str]] = {}
    for importer in modules():
        own = set(_ancestors(importer))
        targets: set[str] = set()
        for imp in imports_of(importer):
            if imp.type_checking:
                continue
            for name in [*_ancestors(imp.target), imp.target]:
                if name in modules() and name not in own and name != importer:
                    targets.add(name)
        edges[importer] = frozenset(targets)
    return edges


def strongly_connected(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(components)


def simple_cycles(edges: dict[str, frozenset[str]], limit: int = 200) -> list[list[str]]:
    """Every elementary cycle (each listed once, from its smallest module), at most `limit`."""
    cycles: list[list[str]] = []
    for component in strongly_connected(edges):
        members = set(component)
        for start in component:
            allowed = {m for m in members if m >= start}
            path = [start]

            def extend(node: str, allowed: set[str] = allowed, path: list[str] = path, start: str = start) -> None:
                for succ in sorted(edges[node] & allowed):
                    if len(cycles) >= limit:
                        return
                    if succ == start:
                        cycles.append([*path, start])
                    elif succ not in path:
                        path.append(succ)
                        extend(succ)
                        path.pop()

            extend(start)
    return cycles


def _where(importer: str, target: str) -> str:
    lines = sorted(
        imp.line
        for imp in imports_of(importer)
        if not imp.type_checking and (imp.target == target or imp.target.startswith(target + "."))
    )
    return f"{importer} -> {target} (line {', '.join(map(str, lines))})"


# -- purity of durable_core ---------------------------------------------------------------------


def _core_modules() -> list[str]:
    return [name for name in modules() if name.split(".")[0] == "durable_core"]


def test_durable_core_is_found() -> None:
    """The scan sees the package (an empty list would make the purity checks vacuous)."""
    assert {"durable_core.machine", "durable_core.txn", "durable_core.memory"} <= set(_core_modules())


def test_durable_core_imports_no_io_or_shell_module() -> None:
    """No module of durable_core imports an I/O, concurrency or web module, or the proxy, and it
    uses nothing of the SDK but the wire contract (see the module docstring)."""
    offences: list[str] = []
    for name in _core_modules():
        for imp in imports_of(name):
            top = imp.target.split(".")[0]
            if top in FORBIDDEN:
                offences.append(f"{name}:{imp.line} imports {imp.target}")
            elif top == "handlers_sdk" and imp.target not in SDK_ALLOWED:
                offences.append(f"{name}:{imp.line} imports {imp.target} (only {sorted(SDK_ALLOWED)})")
    assert offences == []


_IMPORT_ALL = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import pkgutil
    import sys
    import types

    BLOCKED = frozenset(sys.argv[1].split(","))
    STUB_SDK = sys.argv[2] == "stub"
    CORE = sys.argv[3].split(",")


    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("durable_core pulled in " + name)
            return None


    sys.meta_path.insert(0, Block())
    if STUB_SDK:
        package = types.ModuleType("handlers_sdk")
        package.__path__ = [sys.argv[4]]
        sys.modules["handlers_sdk"] = package
    for name in CORE:
        importlib.import_module(name)
    print(",".join(sorted(m for m in sys.modules if m.startswith("handlers_sdk."))))
    """
)


@pytest.mark.parametrize(
    ("blocked", "sdk"),
    [pytest.param(FORBIDDEN, "stub", id="sdk-stubbed-all-blocked"), pytest.param(PROXY_SIDE, "real", id="real-sdk")],
)
def test_durable_core_imports_with_the_shell_blocked(blocked: frozenset[str], sdk: str) -> None:
    """Every durable_core module imports in a fresh interpreter where the blocked modules raise
    ImportError (see the module docstring for the two variants)."""
    args = [",".join(sorted(blocked)), sdk, ",".join(_core_modules()), str(REPO / "handlers_sdk")]
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    if sdk == "stub":
        assert set(result.stdout.strip().split(",")) <= SDK_ALLOWED


# -- cycles -------------------------------------------------------------------------------------


def test_the_cycle_finder_finds_cycles() -> None:
    """The finder itself: it reports each elementary cycle once, and nothing for a DAG."""
    edges = {
        "a": frozenset({"b"}),
        "b": frozenset({"c", "a"}),
        "c": frozenset({"a"}),
        "d": frozenset({"a", "e"}),
        "e": frozenset(),
    }
    assert simple_cycles(edges) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    assert simple_cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_the_import_graph_resolves_relative_and_package_imports() -> None:
    """The graph has the edges a reader sees: ``from durable_core.journal import finish`` is an
    edge to durable_core.journal, and handlers_sdk's own package ``__init__`` imports its
    submodules."""
    edges = graph()
    assert "durable_core.journal" in edges["durable_core.control"]
    assert "handlers_sdk.protocol" in edges["durable_core.journal"]
    assert "handlers_sdk" in edges["durable_core.journal"]  # importing handlers_sdk.protocol runs it
    assert "handlers_sdk.context" in edges["handlers_sdk"]


def test_no_import_cycles() -> None:
    """No module of proxy, handlers_sdk or durable_core imports itself through others at run time."""
    edges = graph()
    cycles = simple_cycles(edges)
    report = [
        " -> ".join(cycle) + "\n      " + "\n      ".join(_where(a, b) for a, b in itertools.pairwise(cycle))
        for cycle in cycles
    ]
    assert cycles == [], f"{len(cycles)} import cycles:\n  " + "\n  ".join(report)


# -- layering of proxy/ -------------------------------------------------------------------------

LAYERS = {
    "proxy.store": ("proxy.engine", "proxy.api", "proxy.tools"),
    "proxy.engine": ("proxy.api", "proxy.tools"),
    "proxy.api": ("proxy.tools",),
}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_proxy_layer_imports_nothing_above_it(layer: str) -> None:
    """store < engine < api < tools: a layer never imports one above it (type-only imports too)."""
    members = [name for name in modules() if _under(name, layer)]
    assert members, f"no modules under {layer}"
    offences = [
        f"{imp.importer}:{imp.line} imports {imp.target}"
        for name in members
        for imp in imports_of(name)
        if any(_under(imp.target, above) for above in LAYERS[layer])
    ]
    assert offences == []


def _reachable(roots: Iterable[str], edges: dict[str, frozenset[str]]) -> dict[str, str]:
    """Every module reachable from `roots`, mapped to the module it was first reached from."""
    seen: dict[str, str] = {root: "" for root in roots}
    todo = list(seen)
    while todo:
        node = todo.pop()
        for succ in sorted(edges.get(node, ())):
            if succ not in seen:
                seen[succ] = node
                todo.append(succ)
    return seen


def test_the_server_never_reaches_the_tools() -> None:
    """Following runtime imports from the server (`proxy.serve`, api, engine, store) never
    reaches `proxy.tools` (the CLI and dev mode are for people, not for the running proxy)."""
    roots = [
        name
        for name in modules()
        if name == "proxy.serve" or any(_under(name, layer) for layer in ("proxy.api", "proxy.engine", "proxy.store"))
    ]
    assert "proxy.serve" in roots
    via = _reachable(roots, graph())
    leaks = []
    for name in sorted(n for n in via if _under(n, "proxy.tools")):
        chain = [name]
        while via[chain[-1]]:
            chain.append(via[chain[-1]])
        leaks.append(" <- ".join(chain))
    assert leaks == []
