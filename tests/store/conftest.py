"""The backends under the store conformance suite (`test_conformance.py`).

Every test of the suite takes the `backend` fixture, so it runs once per entry of `BACKENDS`:
LMDB (`proxy.store.lmdb.Store` over a fresh tmp dir) and `durable_core.memory.MemoryStore`.

Adding a backend (PostgreSQL is next) means adding one entry to `BACKENDS` and nothing else:
a ``pytest.param`` of a context-manager factory that takes the test's tmp dir, yields an open,
empty `durable_core.txn.Backend` holding every database of `DBS`, and releases it afterwards.
The suite itself never names a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from durable_core.memory import MemoryStore
from durable_core.txn import Backend
from proxy.store.lmdb import Store

__all__ = ["BACKENDS", "BackendFactory", "backend"]

#: Opens an empty backend for one test (given the test's tmp dir) and closes it afterwards.
BackendFactory = Callable[[Path], AbstractContextManager[Backend]]


@contextmanager
def _lmdb(tmp_path: Path) -> Iterator[Backend]:
    store = Store(str(tmp_path / "data"), map_size=64 * 1024 * 1024)
    store.open()
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _memory(tmp_path: Path) -> Iterator[Backend]:
    store = MemoryStore()
    try:
        yield store
    finally:
        store.close()


#: One entry per backend under the suite (see the module docstring).
BACKENDS = [
    pytest.param(_lmdb, id="lmdb"),
    pytest.param(_memory, id="memory"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An open, empty backend; each test runs once per entry of `BACKENDS`."""
    factory: BackendFactory = request.param
    with factory(tmp_path) as store:
        yield store
