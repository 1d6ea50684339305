"""The LMDB backend of the store seam (`durable_core.txn`): the environment, its named
databases, the data-dir lock, and read and write transactions.

Durability flags are fixed: ``sync=True, metasync=True, writemap=False``: every committed
transaction is on disk (fsync) before the writer reports it. Write transactions are used only
from the writer thread (`proxy.store.writer`), as LMDB requires.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, cast

import lmdb

from durable_core.txn import DBS

__all__ = ["LmdbRead", "LmdbTxn", "Store", "StoreLocked"]


class StoreLocked(RuntimeError):
    """Another proxy process already owns this data directory."""


class LmdbRead:
    """A read transaction (`durable_core.txn.ReadTxn`) over named databases."""

    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        """A value as this transaction sees it."""
        # Transactions are begun with buffers=False: values are bytes.
        return cast("bytes | None", self._txn.get(key, db=self._dbs[db]))

    def items_from(self, db: str, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key order, from the first key >= `start`."""
        cursor = self._txn.cursor(db=self._dbs[db])
        if cursor.set_range(start):
            for key, value in cursor:
                yield bytes(key), bytes(value)

    def items_with_prefix(self, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in order."""
        cursor = self._txn.cursor(db=self._dbs[db])
        if cursor.set_range(prefix):
            for key, value in cursor:
                key = bytes(key)
                if not key.startswith(prefix):
                    return
                yield key, bytes(value)

    def items_before(self, db: str, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in descending key order, from the last key < `end` (None: from the
        last key)."""
        cursor = self._txn.cursor(db=self._dbs[db])
        if end is None:
            positioned = cursor.last()
        elif cursor.set_range(end):
            # On the first key >= end: the one before it is the first to yield.
            positioned = cursor.prev()
        else:
            # Every key is < end.
            positioned = cursor.last()
        if positioned:
            for key, value in cursor.iterprev():
                yield bytes(key), bytes(value)

    def count(self, db: str) -> int:
        """Number of rows in a database."""
        return int(self._txn.stat(self._dbs[db])["entries"])


class LmdbTxn(LmdbRead):
    """A write transaction (`durable_core.txn.Txn`); `child` nests one inside it."""

    __slots__ = ("_env",)

    def __init__(self, env: lmdb.Environment, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        super().__init__(txn, dbs)
        self._env = env

    def put(self, db: str, key: bytes, value: bytes) -> None:
        """Insert or overwrite."""
        self._txn.put(key, value, db=self._dbs[db])

    def delete(self, db: str, key: bytes) -> None:
        """Remove a key if present."""
        self._txn.delete(key, db=self._dbs[db])

    def delete_prefix(self, db: str, prefix: bytes) -> int:
        """Remove every key that starts with `prefix`; returns how many."""
        cursor = self._txn.cursor(db=self._dbs[db])
        removed = 0
        if cursor.set_range(prefix):
            while bytes(cursor.key()).startswith(prefix):
                if not cursor.delete():
                    break
                removed += 1
        return removed

    def child(self) -> LmdbTxn:
        """A nested write transaction."""
        return LmdbTxn(self._env, self._env.begin(write=True, parent=self._txn, buffers=False), self._dbs)

    def commit(self) -> None:
        """Commit (with fsync at top level, into the parent when nested)."""
        self._txn.commit()

    def abort(self) -> None:
        """Discard the writes."""
        self._txn.abort()


class Store:
    """One LMDB environment with its named databases, owned by exactly one process."""

    def __init__(self, data_dir: str, map_size: int) -> None:
        self.data_dir = data_dir
        #: Where LMDB keeps its data file (the environment is a directory).
        self.path = os.path.join(data_dir, "lmdb")
        self._initial_map_size = map_size
        self._lock_file: IO[bytes] | None = None
        self._env: lmdb.Environment | None = None
        self.dbs: dict[str, Any] = {}

    def open(self) -> None:
        """Take the data-dir lock and open the environment.

        Raises:
            StoreLocked: another process owns the data directory.
        """
        os.makedirs(self.data_dir, exist_ok=True)
        lock_file = open(os.path.join(self.data_dir, "proxy.lock"), "wb")  # noqa: SIM115
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise StoreLocked(f"data dir {self.data_dir} is in use by another proxy process") from None
        self._lock_file = lock_file
        self._env = lmdb.open(
            self.path,
            map_size=self._initial_map_size,
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
    def env(self) -> lmdb.Environment:
        """The open environment.

        Raises:
            RuntimeError: `open` has not been called (or `close` has).
        """
        if self._env is None:
            raise RuntimeError("the store is not open")
        return self._env

    @property
    def map_size(self) -> int:
        """Current map size in bytes."""
        return int(self.env.info()["map_size"])

    @contextmanager
    def read(self) -> Iterator[LmdbRead]:
        """A read transaction (never blocks the writer)."""
        txn = self.env.begin(buffers=False)
        try:
            yield LmdbRead(txn, self.dbs)
        finally:
            txn.abort()

    def begin(self) -> LmdbTxn:
        """The write transaction (only ever on the writer thread)."""
        return LmdbTxn(self.env, self.env.begin(write=True, buffers=False), self.dbs)

    def get(self, db: str, key: bytes) -> bytes | None:
        """One value, read in its own transaction."""
        with self.env.begin(db=self.dbs[db]) as txn:
            value: bytes | None = txn.get(key)
            return value

    def count(self, db: str) -> int:
        """Number of rows in a database, read in its own transaction."""
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
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
