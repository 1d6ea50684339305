"""The LMDB environment: lifecycle, named databases, the data-dir lock and read helpers.

Durability flags are fixed: ``sync=True, metasync=True, writemap=False``: every committed
transaction is on disk (fsync) before the writer reports it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import lmdb

__all__ = ["DBS", "Store", "StoreLocked"]

#: Named databases and what they hold.
DBS = {
    "invocations": "invocation id -> InvocationRecord (msgpack)",
    "inputs": "invocation id -> request body (JSON)",
    "journal": "invocation id NUL be32 index -> JournalItem (JSON)",
    "idempotency": "sha256(service, handler, key, idempotency key) -> invocation id",
    "active": "invocation id -> b'' for every invocation that is not completed",
    "deployments": "deployment id -> DeploymentRecord (msgpack)",
    "services": "service name -> ServiceRecord (msgpack)",
    "timers": "be64 due ms, invocation id, NUL, be32 index -> b'' (sleeps and delayed starts)",
    "locks": "sha256(service, key) -> invocation id holding an object or workflow key",
    "inbox": "sha256(service, key) be64 seq -> invocation id waiting for the key's lock",
    "state": "sha256(service, key) sha256(name)[:16] -> msgpack (name, JSON value)",
    "workflows": "sha256(workflow, key) -> invocation id of its run",
    "promises": "sha256(workflow, key) sha256(name)[:16] -> PromiseRecord (msgpack)",
    "promise_waiters": "promise key, invocation id, NUL, be32 index -> b''",
    "expiry": "be64 expiry ms, invocation id -> b'' (completed invocations, for the retention sweeper)",
    "meta": "counters (inbox_seq)",
}


class StoreLocked(RuntimeError):
    """Another proxy process already owns this data directory."""


class Store:
    """One LMDB environment with its named databases, owned by exactly one process."""

    def __init__(self, data_dir: str, map_size: int) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self._lock_file: IO[bytes] | None = open(os.path.join(data_dir, "proxy.lock"), "wb")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreLocked(f"data dir {data_dir} is in use by another proxy process") from None
        self.env = lmdb.open(
            os.path.join(data_dir, "lmdb"),
            map_size=map_size,
            max_dbs=len(DBS) + 4,
            max_readers=512,
            sync=True,
            metasync=True,
            writemap=False,
            map_async=False,
            readahead=False,
        )
        # Slots of readers from a killed proxy stay until this is called.
        self.env.reader_check()
        self.dbs = {name: self.env.open_db(name.encode()) for name in DBS}

    @property
    def map_size(self) -> int:
        """Current map size in bytes."""
        return int(self.env.info()["map_size"])

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read transaction (never blocks the writer)."""
        txn = self.env.begin(buffers=False)
        try:
            yield txn
        finally:
            txn.abort()

    def get(self, db: str, key: bytes) -> bytes | None:
        """One value, read in its own transaction."""
        with self.env.begin(db=self.dbs[db]) as txn:
            value: bytes | None = txn.get(key)
            return value

    def scan_prefix(self, db: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix`, in key order."""
        rows: list[tuple[bytes, bytes]] = []
        with self.env.begin(db=self.dbs[db]) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    rows.append((key, value))
        return rows

    def keys(self, db: str) -> list[bytes]:
        """Every key of a database."""
        with self.env.begin(db=self.dbs[db]) as txn:
            return [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]

    def count(self, db: str) -> int:
        """Number of rows in a database."""
        with self.env.begin() as txn:
            return int(txn.stat(self.dbs[db])["entries"])

    def usage(self) -> dict[str, int]:
        """Map size and bytes in use."""
        info = self.env.info()
        stat = self.env.stat()
        used = (info["last_pgno"] + 1) * stat["psize"]
        return {"map_size": int(info["map_size"]), "used_bytes": int(used)}

    def close(self) -> None:
        """Close the environment and release the data-dir lock."""
        self.env.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
