"""Every package and module declares a sorted, complete ``__all__`` (httpx's test_exported_members).

Sorted means ruff's RUF022 "isort-style" order, which the code base uses: SCREAMING_CASE
constants, then CamelCase classes, then everything else, each group in ASCII order.
Complete means:

* a package ``__init__`` exports every public attribute it binds (and ``__version__``), except
  its submodules;
* a module exports every public class and function it defines and every SCREAMING_CASE constant
  (type aliases, TypeVars and loggers may stay unexported);
* nothing is exported that does not exist.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import pkgutil
import types
import typing
from pathlib import Path

import pytest

PACKAGES = ("proxy", "handlers_sdk", "durable_core")
#: Modules that need a dependency outside the test environment's core (imported only on demand).
_OPTIONAL = frozenset({"proxy.store.postgres"})


def _modules() -> list[str]:
    names: list[str] = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        # Every level: subpackages (proxy.api, proxy.engine, ...) and their modules.
        names.extend(info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."))
    return sorted(name for name in names if name not in _OPTIONAL or _importable(name))


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


MODULES = _modules()


def _isort_key(name: str) -> tuple[int, str]:
    if name.isupper() and len(name) > 1:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return group, name


def _defined_public_names(module: types.ModuleType) -> set[str]:
    """Public classes, functions and SCREAMING_CASE constants defined (not imported) in `module`."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper() and len(target.id) > 1:
                    names.add(target.id)
    return {
        name
        for name in names
        if not name.startswith("_") and not isinstance(getattr(module, name, None), typing.TypeVar)
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_package_exports_are_sorted(package: str) -> None:
    exported = list(importlib.import_module(package).__all__)
    assert exported == sorted(exported, key=_isort_key)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_exports_are_complete(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }
    assert set(module.__all__) == public
    assert "__version__" in module.__all__


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__ list"


@pytest.mark.parametrize("name", MODULES)
def test_module_exports_are_sorted(name: str) -> None:
    exported = list(importlib.import_module(name).__all__)
    assert exported == sorted(exported, key=_isort_key)
    assert len(exported) == len(set(exported)), "duplicate names"


@pytest.mark.parametrize("name", MODULES)
def test_module_exports_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


@pytest.mark.parametrize("name", MODULES)
def test_module_exports_are_complete(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(_defined_public_names(module) - set(module.__all__)) == []
