"""The backends under the store conformance suite (`test_conformance.py`).

Every test of the suite takes the `backend` fixture, so it runs once per entry of `BACKENDS`:
LMDB (`proxy.store.lmdb.Store` over a fresh tmp dir), `durable_core.memory.MemoryStore`, and
PostgreSQL (`proxy.store.postgres.PostgresStore` on the session's private cluster,
`tests.postgres.pg_cluster`: one database for the suite, its tables emptied before each test;
skipped with the reason where PostgreSQL is not installed or cannot start).

Adding a backend means adding one entry to `BACKENDS` and nothing else: a ``pytest.param`` of a
context-manager factory that takes the test's fixture request (to ask for the session fixtures
it needs, so the other backends never depend on them) and tmp dir, yields an open, empty
`durable_core.txn.Backend` holding every database of `DBS`, and releases it afterwards. The
suite itself never names a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from durable_core.memory import MemoryStore
from durable_core.txn import Backend
from proxy.store.lmdb import Store
from tests.postgres import PgCluster, pg_cluster

__all__ = ["BACKENDS", "BackendFactory", "backend", "pg_cluster", "pg_store_url"]

#: Opens an empty backend for one test (given its fixture request and tmp dir) and closes it afterwards.
BackendFactory = Callable[[pytest.FixtureRequest, Path], AbstractContextManager[Backend]]


@contextmanager
def _lmdb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    store = Store(str(tmp_path / "data"), map_size=64 * 1024 * 1024)
    store.open()
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    store = MemoryStore()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def pg_store_url(pg_cluster: PgCluster) -> str:
    """The URL of the database the suite's PostgreSQL runs share (created once per session)."""
    return pg_cluster.fresh_database("store")


@contextmanager
def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    from proxy.store.postgres import PostgresStore

    store = PostgresStore(request.getfixturevalue("pg_store_url"))
    store.open()
    try:
        store.truncate()
        yield store
    finally:
        store.close()


#: One entry per backend under the suite (see the module docstring).
BACKENDS = [
    pytest.param(_lmdb, id="lmdb"),
    pytest.param(_memory, id="memory"),
    pytest.param(_postgres, id="postgres"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An open, empty backend; each test runs once per entry of `BACKENDS`."""
    factory: BackendFactory = request.param
    with factory(request, tmp_path) as store:
        yield store
