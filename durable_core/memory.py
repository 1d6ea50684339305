"""An in-memory backend with the semantics of the LMDB one: ordered bytes keys, nested writes.

For the state machine's unit tests and the toolkit's `LocalRuntime`: nothing survives the
process. Committed rows live in one sorted list of keys plus a dict per database; a write
transaction keeps its changes in an overlay (value, or None for "deleted") merged on commit, so
an aborted transaction leaves nothing behind and a read transaction never sees uncommitted rows.

A read transaction is a snapshot, as in LMDB: it holds the tables as they were when it began,
and a commit made while any reader is open writes copies of the tables it changes instead of
changing them in place (copy-on-write), so the reader neither sees the commit nor breaks in the
middle of a scan. With no reader open, commits change the tables in place.

Keys are checked as LMDB checks them: non-empty and at most `MAX_KEY_BYTES` long.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager

from durable_core.txn import DBS

__all__ = ["MAX_KEY_BYTES", "MemoryStore", "MemoryTxn"]

_TOMBSTONE = None
#: LMDB's default key size limit (``Environment.max_key_size()``), enforced here as well so a
#: rule that builds a longer key fails in the unit tests, not first in the proxy.
MAX_KEY_BYTES = 511


class _Table:
    """One committed database: a dict and its keys in order."""

    __slots__ = ("keys", "rows")

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []

    def copy(self) -> _Table:
        """A table with the same rows, sharing nothing mutable with this one."""
        twin = _Table()
        twin.rows = dict(self.rows)
        twin.keys = list(self.keys)
        return twin

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self.rows:
            bisect.insort(self.keys, key)
        self.rows[key] = value

    def delete(self, key: bytes) -> None:
        if self.rows.pop(key, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]


class _View:
    """Reads over committed tables plus a stack of overlays (innermost last)."""

    def __init__(self, tables: dict[str, _Table], overlays: list[dict[str, dict[bytes, bytes | None]]]) -> None:
        self._tables = tables
        self._overlays = overlays

    def _table(self, db: str) -> _Table:
        try:
            return self._tables[db]
        except KeyError:
            raise KeyError(f"no database {db!r}") from None

    def get(self, db: str, key: bytes) -> bytes | None:
        """The value of `key` as this transaction sees it."""
        table = self._table(db)
        for overlay in reversed(self._overlays):
            changes = overlay.get(db)
            if changes is not None and key in changes:
                return changes[key]
        return table.rows.get(key)

    def items_from(self, db: str, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key order from the first key >= `start`."""
        table = self._table(db)
        changed: set[bytes] = set()
        for overlay in self._overlays:
            changed.update(k for k in overlay.get(db, {}) if k >= start)
        if not changed:
            # The common case (reads outside a write, or of an untouched db): no merge needed.
            position = bisect.bisect_left(table.keys, start)
            for key in table.keys[position:]:
                yield key, table.rows[key]
            return
        position = bisect.bisect_left(table.keys, start)
        keys = sorted(changed.union(table.keys[position:]))
        for key in keys:
            value = self.get(db, key)
            if value is not None:
                yield key, value

    def items_with_prefix(self, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`."""
        for key, value in self.items_from(db, prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    def items_before(self, db: str, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in descending key order from the last key < `end` (None: from the
        last key)."""
        table = self._table(db)
        position = len(table.keys) if end is None else bisect.bisect_left(table.keys, end)
        changed: set[bytes] = set()
        for overlay in self._overlays:
            changed.update(k for k in overlay.get(db, {}) if end is None or k < end)
        if not changed:
            for index in range(position - 1, -1, -1):
                key = table.keys[index]
                yield key, table.rows[key]
            return
        keys = sorted(changed.union(table.keys[:position]), reverse=True)
        for key in keys:
            value = self.get(db, key)
            if value is not None:
                yield key, value

    def count(self, db: str) -> int:
        """Rows in `db` as this transaction sees them."""
        table = self._table(db)
        total = len(table.rows)
        merged: dict[bytes, bytes | None] = {}
        for overlay in self._overlays:
            merged.update(overlay.get(db, {}))
        for key, value in merged.items():
            present = key in table.rows
            if value is None and present:
                total -= 1
            elif value is not None and not present:
                total += 1
        return total


class MemoryTxn(_View):
    """A write transaction (or a nested one) over a `MemoryStore`."""

    def __init__(
        self,
        store: MemoryStore,
        tables: dict[str, _Table],
        overlays: list[dict[str, dict[bytes, bytes | None]]],
        parent: MemoryTxn | None,
    ) -> None:
        super().__init__(tables, overlays)
        self._store = store
        self._parent = parent
        self._open = True

    @property
    def _own(self) -> dict[str, dict[bytes, bytes | None]]:
        return self._overlays[-1]

    def _check(self) -> None:
        if not self._open:
            raise RuntimeError("transaction already ended")

    def put(self, db: str, key: bytes, value: bytes) -> None:
        """Insert or overwrite."""
        self._check()
        self._table(db)
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("keys and values are bytes")
        if not key:
            raise ValueError("an empty key is not allowed")
        if len(key) > MAX_KEY_BYTES:
            raise ValueError(f"a key is at most {MAX_KEY_BYTES} bytes (got {len(key)})")
        self._own.setdefault(db, {})[key] = value

    def delete(self, db: str, key: bytes) -> None:
        """Remove `key` if present."""
        self._check()
        self._table(db)
        self._own.setdefault(db, {})[key] = _TOMBSTONE

    def delete_prefix(self, db: str, prefix: bytes) -> int:
        """Remove every key that starts with `prefix`; returns how many."""
        keys = [key for key, _ in self.items_with_prefix(db, prefix)]
        for key in keys:
            self.delete(db, key)
        return len(keys)

    def child(self) -> MemoryTxn:
        """A nested transaction."""
        self._check()
        return MemoryTxn(self._store, self._tables, [*self._overlays, {}], self)

    def commit(self) -> None:
        """Merge into the parent, or (top level) into the committed tables."""
        self._check()
        self._open = False
        if self._parent is not None:
            target = self._parent._own
            for db, changes in self._own.items():
                target.setdefault(db, {}).update(changes)
            return
        for db, changes in self._own.items():
            table = self._tables[db]
            if self._store._readers:
                # An open reader holds this table: leave it as it is (see the module docstring).
                table = self._tables[db] = table.copy()
            for key, value in changes.items():
                if value is None:
                    table.delete(key)
                else:
                    table.put(key, value)
        self._store._writing = False
        self._store.commits += 1

    def abort(self) -> None:
        """Discard every write."""
        if not self._open:
            return
        self._open = False
        if self._parent is None:
            self._store._writing = False


class MemoryStore:
    """The in-memory backend (see the module docstring). Single-threaded."""

    def __init__(self) -> None:
        self._tables = {name: _Table() for name in DBS}
        self._writing = False
        #: Read transactions open now (commits copy the tables they change while any is).
        self._readers = 0
        #: Committed write transactions.
        self.commits = 0

    @contextmanager
    def read(self) -> Iterator[_View]:
        """A read transaction: a snapshot of what is committed when it begins."""
        self._readers += 1
        try:
            # Its own dict of tables: a later commit replaces entries of the store's dict only.
            yield _View(dict(self._tables), [])
        finally:
            self._readers -= 1

    def begin(self) -> MemoryTxn:
        """Begin the write transaction (one at a time, as LMDB)."""
        if self._writing:
            raise RuntimeError("a write transaction is already open")
        self._writing = True
        return MemoryTxn(self, self._tables, [{}], None)

    def close(self) -> None:
        """Nothing to release."""
