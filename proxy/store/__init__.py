"""The proxy's stores: the backends of the store seam (`durable_core.txn`) and their writer.

* `proxy.store.lmdb`: LMDB in ``--data-dir`` (the default; one process per directory).
* `proxy.store.postgres`: PostgreSQL at ``--store postgresql://...`` (`psycopg` is imported only then).
* `proxy.store.writer`: the one writer thread, group commit over any backend.

Defined here, since the writer and every backend share them: the errors a backend raises when the
store itself fails, as opposed to one request's own error (a `ProxyError` of the machine). The
writer fails the whole batch on a `StoreFailure` instead of blaming the request it was running.
"""

from __future__ import annotations

from durable_core.errors import ProxyError, StorageFull, Unavailable

__all__ = ["StoreConflict", "StoreFailure", "StoreFull", "StoreUnavailable"]


class StoreFailure(ProxyError):
    """The store failed (not the request): the transaction is lost, its batch fails (500)."""


class StoreUnavailable(StoreFailure, Unavailable):
    """The store cannot be reached, or the connection broke (503); the backend reconnects by itself."""


class StoreFull(StoreFailure, StorageFull):
    """The store has no room left (507)."""


class StoreConflict(StoreUnavailable):
    """Another proxy's transaction changed rows this one read or wrote, and committed first: the
    transaction is lost and must run again (the writer does; 503 if it keeps losing)."""
