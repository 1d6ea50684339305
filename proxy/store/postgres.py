"""The PostgreSQL backend of the store seam (`durable_core.txn`), over psycopg 3 (sync).

Layout: one table per named database of `DBS`, ``durable_proxy.<name> (key bytea PRIMARY KEY,
value bytea NOT NULL)``, in the schema `SCHEMA`. bytea compares bytewise (memcmp, a shorter prefix
first), so the primary key's order is LMDB's order and every scan is an index range scan:
`items_from` is ``key >= start ORDER BY key``, `items_with_prefix` adds ``key < upper(prefix)``
(the prefix less its trailing 0xff bytes, its last byte plus one: `prefix_upper_bound`), `items_before` is
``key < end ORDER BY key DESC``; each is fetched in chunks (`LIMIT`, then from the last key seen),
so a scan stopped early reads little.

Schema: created or migrated by `PostgresStore.open` under a transaction-scoped advisory lock
(`MIGRATION_LOCK`), so proxies starting at once against one database migrate it once; the
version is the single row of ``durable_proxy.schema_version`` (`SCHEMA_VERSION`). A database
migrated by a newer proxy is refused, not downgraded.

Several proxies share one database. Each write transaction is one PostgreSQL transaction at
REPEATABLE READ: its reads and its flush see one snapshot, and a row another proxy changed
meanwhile fails the commit with a serialization failure (`StoreConflict`), which the writer
answers by running the batch again. Every rule of the state machine that reads a row and decides
writes that row (an idempotency key, an object's lock, a counter), so first-updater-wins is
what keeps them exact across proxies. Which proxy drives which invocation is decided by the
leases of `proxy.store.leases`; a transaction acting as owner locks its lease rows first (`hold`).

Reads (`read`): a ``REPEATABLE READ READ ONLY`` transaction whose snapshot is taken when the block
begins (as in LMDB), on a connection from a small pool.

Writes (`begin`): the transaction buffers its writes in memory, one overlay per nesting level
(`child` pushes one, its `commit` merges it into the parent's, `abort` drops it), and reads see
the overlays over the rows of its snapshot. PostgreSQL sees only the reads and, at the top-level
`commit`, one flush: per database one ``INSERT ... SELECT FROM unnest(keys, values) ON CONFLICT
DO UPDATE`` and one ``DELETE ... WHERE key = ANY(keys)``, in one transaction, with
``synchronous_commit`` at least ``on``: `commit` returns once the commit is durable. A request
of the writer's batch that fails leaves nothing behind without a SAVEPOINT round trip or a
subtransaction (measured: savepoints per request made a batch of 25 two to three times slower).

Failures: a psycopg error becomes a `proxy.store.StoreFailure` whose message never holds the
password (`redact`): the database unreachable or the connection lost is `StoreUnavailable` (503);
then reads and writes fail at once (no connect on the caller's thread) while a background thread
reconnects, and the first statement of a transaction on a connection that went stale meanwhile
is retried once on a new one. A lost connection during the flush's COMMIT is reported as
unavailable with an unknown outcome (the transaction may or may not have committed). Disk full
is `StoreFull` (507). Keys are checked as LMDB checks them (non-empty, at most 511 bytes).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from durable_core.partitions import DEFAULT_PARTITIONS, MAX_PARTITIONS
from durable_core.txn import DBS
from proxy.store import StoreConflict, StoreFailure, StoreFull, StoreUnavailable, leases

__all__ = [
    "MAX_KEY_BYTES",
    "MIGRATION_LOCK",
    "SCHEMA",
    "SCHEMA_VERSION",
    "PostgresRead",
    "PostgresStore",
    "PostgresTxn",
    "StoreConflict",
    "is_postgres_url",
    "prefix_upper_bound",
    "redact",
]

log = logging.getLogger("proxy.store.postgres")

SCHEMA = "durable_proxy"
#: The schema this code reads and writes; `_MIGRATIONS[v - 1]` brings version v - 1 to v.
SCHEMA_VERSION = 5
#: ``pg_advisory_xact_lock`` key held while migrating ("durable" as a big-endian integer).
MIGRATION_LOCK = int.from_bytes(b"durable", "big")
#: LMDB's key size limit, enforced here too so that a rule that builds a longer key fails alike.
MAX_KEY_BYTES = 511

#: Rows fetched by the first query of a scan; each further chunk doubles, up to `_CHUNK_MAX`.
_CHUNK_FIRST = 64
_CHUNK_MAX = 1024
#: Idle read connections kept open.
_POOL_IDLE = 8
#: Seconds between two reconnection attempts while the database is unreachable.
_PROBE_INTERVAL = 0.25
#: Connection parameters the URL does not set itself: fail fast, notice a dead peer.
_CONNECT_DEFAULTS = {
    "connect_timeout": "3",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "application_name": "durable-proxy",
}
#: Session settings of every connection: a statement or lock wait never blocks a caller for long.
#: The idle-in-transaction limit is the store's (`PostgresStore`: half a lease): a proxy paused or cut
#: off in the middle of a write holds its lease rows locked, and no other proxy could take them over.
_SESSION = (
    "SET statement_timeout = '15s'; SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '{idle}ms'"
)
#: synchronous_commit values weaker than "on", raised to "on" (stronger ones are kept).
_WEAK_COMMIT = {"off", "local", "remote_write"}
_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1"
#: A write transaction: its first statement takes the snapshot its reads and its flush share.
_BEGIN_WRITE = b"BEGIN ISOLATION LEVEL REPEATABLE READ"
#: SQLSTATEs of a transaction that lost a race with another proxy's (run it again).
_CONFLICT = {"40001", "40P01"}
#: SQLSTATEs that mean "the database is not available now" (503, retry later) rather than a fault.
_TRANSIENT = {"57014", "55P03", "53300", "53400"}

_Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


#: What each schema version adds: its tables (``key bytea PRIMARY KEY, value bytea``). Frozen once
#: released: a new database of `DBS` is a new version, never an edit of an old one, so that every
#: database ends up with the same tables whatever version it started from.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        "invocations", "inputs", "journal", "idempotency", "active", "deployments", "services", "timers",
        "locks", "inbox", "state", "workflows", "promises", "promise_waiters", "expiry", "meta",
    ),
    ("schedules", "held", "pinned"),
    ("flow", "flow_queue", "limits"),
    (),  # version 4: the lease tables (`_DDL`), not key-value ones
    ("state_keys",),
]  # fmt: skip
#: What a version creates besides its key-value tables.
_DDL: dict[int, tuple[str, ...]] = {4: leases.DDL}
if set(DBS) - {name for names in _MIGRATIONS for name in names} or len(_MIGRATIONS) != SCHEMA_VERSION:
    raise RuntimeError("every database of DBS needs its table, and SCHEMA_VERSION is len(_MIGRATIONS)")


def is_postgres_url(url: str) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return url.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL with its password (in the user info or a ``password=`` parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{hostport}"
        query = parts.query
        if query:
            pairs = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)]
            query = urlencode(pairs, safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "postgresql://***"


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class _Sql:
    """The statements of one table."""

    __slots__ = (
        "after", "after_to", "before", "count", "delete", "existing", "first", "first_to", "get", "keys",
        "keys_to", "last", "update", "upsert",
    )  # fmt: skip

    def __init__(self, name: str) -> None:
        table = sql.Identifier(SCHEMA, name)

        def q(text: str) -> bytes:
            return sql.SQL(text).format(t=table).as_bytes(None)

        self.get = q("SELECT value FROM {t} WHERE key = %b")
        self.first = q("SELECT key, value FROM {t} WHERE key >= %b ORDER BY key LIMIT %b")
        self.after = q("SELECT key, value FROM {t} WHERE key > %b ORDER BY key LIMIT %b")
        self.first_to = q("SELECT key, value FROM {t} WHERE key >= %b AND key < %b ORDER BY key LIMIT %b")
        self.after_to = q("SELECT key, value FROM {t} WHERE key > %b AND key < %b ORDER BY key LIMIT %b")
        self.before = q("SELECT key, value FROM {t} WHERE key < %b ORDER BY key DESC LIMIT %b")
        self.last = q("SELECT key, value FROM {t} ORDER BY key DESC LIMIT %b")
        self.count = q("SELECT count(*) FROM {t}")
        self.existing = q("SELECT count(*) FROM {t} WHERE key = ANY(%b::bytea[])")
        self.keys = q("SELECT key FROM {t} WHERE key >= %b ORDER BY key")
        self.keys_to = q("SELECT key FROM {t} WHERE key >= %b AND key < %b ORDER BY key")
        self.upsert = q(
            "INSERT INTO {t} (key, value) SELECT * FROM unnest(%b::bytea[], %b::bytea[])"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )
        self.delete = q("DELETE FROM {t} WHERE key = ANY(%b::bytea[])")
        self.update = q(
            "UPDATE {t} SET value = v.value FROM unnest(%b::bytea[], %b::bytea[]) AS v(key, value)"
            " WHERE {t}.key = v.key"
        )


_SQL = {name: _Sql(name) for name in DBS}


def _statements(db: str) -> _Sql:
    try:
        return _SQL[db]
    except KeyError:
        raise KeyError(f"no database {db!r}") from None


def _check_key(key: bytes) -> None:
    if not key or len(key) > MAX_KEY_BYTES:
        raise ValueError(f"key of {len(key)} bytes: keys are 1 to {MAX_KEY_BYTES} bytes long")


# -- reads ------------------------------------------------------------------------------------------


class _Session:
    """A connection as one transaction uses it: statements, with one retry on a stale connection."""

    __slots__ = ("conn", "fresh", "retry", "store", "used")

    def __init__(self, store: PostgresStore, conn: _Conn, fresh: bool, retry: Callable[[], _Conn]) -> None:
        self.store = store
        self.conn = conn
        #: Connected for this transaction: an error is not a stale pooled connection.
        self.fresh = fresh
        #: A statement of this transaction ran (its snapshot exists): no more retries.
        self.used = False
        self.retry = retry

    def execute(
        self, query: bytes, params: tuple[Any, ...] | None = None, binary: bool = True
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        """Run one statement; a stale connection (before the transaction's first statement) is
        replaced and the statement run once more."""
        try:
            cursor = self.conn.execute(query, params, binary=binary)
        except psycopg.Error as exc:
            if not self.may_retry(exc):
                raise self.store.failure(exc, self.conn) from None
            self.reconnect()
            try:
                cursor = self.conn.execute(query, params, binary=binary)
            except psycopg.Error as again:
                raise self.store.failure(again, self.conn) from None
        self.used = True
        return cursor

    def may_retry(self, exc: BaseException) -> bool:
        """True if `exc` is a pooled connection that died while idle (a database restart) and
        this transaction has not used it yet: the work may run again on a new connection."""
        return not self.used and not self.fresh and _connection_lost(self.conn, exc)

    def reconnect(self) -> None:
        """Replace the connection by a new one (StoreUnavailable if that fails)."""
        self.conn.close()
        self.conn, self.fresh = self.retry(), True

    def rows(self, query: bytes, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise self.store.failure(exc, self.conn) from None

    def one(self, query: bytes, params: tuple[Any, ...] | None = None) -> tuple[Any, ...] | None:
        try:
            return self.execute(query, params).fetchone()
        except psycopg.Error as exc:
            raise self.store.failure(exc, self.conn) from None


def _chunks(session: _Session, db: str, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """Committed rows with start <= key < end (no bound when None), ascending, in growing chunks."""
    stmts = _statements(db)
    size = _CHUNK_FIRST
    if end is None:
        batch = session.rows(stmts.first, (start, size))
    else:
        batch = session.rows(stmts.first_to, (start, end, size))
    while True:
        yield from batch
        if len(batch) < size:
            return
        last = batch[-1][0]
        size = min(size * 2, _CHUNK_MAX)
        if end is None:
            batch = session.rows(stmts.after, (last, size))
        else:
            batch = session.rows(stmts.after_to, (last, end, size))


def _chunks_before(session: _Session, db: str, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """Committed rows with key < end (every row when None), descending, in growing chunks."""
    stmts = _statements(db)
    size = _CHUNK_FIRST
    batch = session.rows(stmts.last, (size,)) if end is None else session.rows(stmts.before, (end, size))
    while True:
        yield from batch
        if len(batch) < size:
            return
        size = min(size * 2, _CHUNK_MAX)
        batch = session.rows(stmts.before, (batch[-1][0], size))


class PostgresRead:
    """A read transaction (`durable_core.txn.ReadTxn`): one snapshot of the committed rows."""

    __slots__ = ("_session",)

    def __init__(self, session: _Session) -> None:
        self._session = session

    def get(self, db: str, key: bytes) -> bytes | None:
        """The value of `key`, or None."""
        row = self._session.one(_statements(db).get, (key,))
        return None if row is None else row[0]

    def items_from(self, db: str, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key order, from the first key >= `start`."""
        _statements(db)
        return _chunks(self._session, db, start, None)

    def items_with_prefix(self, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order."""
        _statements(db)
        return _chunks(self._session, db, prefix, prefix_upper_bound(prefix))

    def items_before(self, db: str, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in descending key order, from the last key < `end` (None: the last key)."""
        _statements(db)
        return _chunks_before(self._session, db, end)

    def count(self, db: str) -> int:
        """Number of rows in `db`."""
        row = self._session.one(_statements(db).count)
        return int(row[0]) if row else 0


# -- writes -----------------------------------------------------------------------------------------

_MISSING = object()
#: Keys per bucket of `_SortedKeys` (a bucket splits in two past twice this).
_BUCKET = 256


class _SortedKeys:
    """Distinct keys in order, in buckets: adding one costs O(log n + bucket), not O(n) as one
    sorted list would once a batch's overlay holds thousands of keys."""

    __slots__ = ("_buckets", "_maxes")

    def __init__(self) -> None:
        self._buckets: list[list[bytes]] = []
        self._maxes: list[bytes] = []

    def add(self, key: bytes) -> None:
        """Add a key not there yet."""
        if not self._buckets:
            self._buckets.append([key])
            self._maxes.append(key)
            return
        i = min(bisect.bisect_left(self._maxes, key), len(self._buckets) - 1)
        bucket = self._buckets[i]
        bisect.insort(bucket, key)
        self._maxes[i] = bucket[-1]
        if len(bucket) > 2 * _BUCKET:
            self._buckets[i : i + 1] = [bucket[:_BUCKET], bucket[_BUCKET:]]
            self._maxes[i : i + 1] = [bucket[_BUCKET - 1], bucket[-1]]

    def range(self, lo: bytes, hi: bytes | None) -> list[bytes]:
        """The keys with lo <= key < hi (no upper bound when None), in order."""
        out: list[bytes] = []
        first = bisect.bisect_left(self._maxes, lo)
        for i in range(first, len(self._buckets)):
            bucket = self._buckets[i]
            start = bisect.bisect_left(bucket, lo) if i == first else 0
            if hi is None or bucket[-1] < hi:
                out.extend(bucket[start:])
                continue
            out.extend(bucket[start : bisect.bisect_left(bucket, hi)])
            break
        return out


class _Layer:
    """The writes of one nesting level: per database, key -> value (None: deleted), keys sorted."""

    __slots__ = ("changes", "keys")

    def __init__(self) -> None:
        self.changes: dict[str, dict[bytes, bytes | None]] = {}
        self.keys: dict[str, _SortedKeys] = {}

    def set(self, db: str, key: bytes, value: bytes | None) -> None:
        changes = self.changes.get(db)
        if changes is None:
            changes = self.changes[db] = {}
            self.keys[db] = _SortedKeys()
        if key not in changes:
            self.keys[db].add(key)
        changes[key] = value

    def merge_into(self, parent: _Layer) -> None:
        for db, changes in self.changes.items():
            for key, value in changes.items():
                parent.set(db, key, value)


class PostgresTxn:
    """A write transaction (`durable_core.txn.Txn`): in-memory overlays over the committed rows,
    flushed to PostgreSQL in one transaction by the top-level `commit`."""

    __slots__ = ("_ended", "_layers", "_root", "_seen", "_session", "_store")

    def __init__(
        self,
        store: PostgresStore,
        session: _Session,
        layers: list[_Layer],
        root: PostgresTxn | None,
        seen: dict[str, set[bytes]] | None = None,
    ) -> None:
        self._store = store
        self._session = session
        self._layers = layers
        self._root = root
        self._ended = False
        #: Keys read as present from the snapshot, per database (shared by the nested ones): their
        #: writes must find the row still there (see `PostgresStore._write`).
        self._seen: dict[str, set[bytes]] = {} if seen is None else seen

    # -- the overlay --------------------------------------------------------------------------------

    def _lookup(self, db: str, key: bytes) -> object:
        for layer in reversed(self._layers):
            changes = layer.changes.get(db)
            if changes is not None:
                value = changes.get(key, _MISSING)
                if value is not _MISSING:
                    return value
        return _MISSING

    def _overlay(self, db: str, lo: bytes, hi: bytes | None, descending: bool = False) -> list[tuple[bytes, object]]:
        """Written keys with lo <= key < hi (no upper bound when None), and their visible values."""
        ranges: list[list[bytes]] = []
        for layer in self._layers:
            keys = layer.keys.get(db)
            if keys is not None:
                found = keys.range(lo, hi)
                if found:
                    ranges.append(found)
        if not ranges:
            return []
        merged = ranges[0] if len(ranges) == 1 else sorted(set(heapq.merge(*ranges)))
        out = [(key, self._lookup(db, key)) for key in merged]
        if descending:
            out.reverse()
        return out

    def _check_open(self) -> None:
        if self._ended or (self._root is not None and self._root._ended):
            raise RuntimeError("the transaction has ended")

    # -- reads --------------------------------------------------------------------------------------

    def get(self, db: str, key: bytes) -> bytes | None:
        """The value of `key` as this transaction sees it."""
        stmts = _statements(db)
        value = self._lookup(db, key)
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        row = self._session.one(stmts.get, (key,))
        if row is None:
            return None
        seen = self._seen.get(db)
        if seen is None:
            seen = self._seen[db] = set()
        seen.add(key)
        return row[0]  # type: ignore[no-any-return]

    def items_from(self, db: str, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key order, from the first key >= `start`."""
        _statements(db)
        return self._merged(db, start, None)

    def items_with_prefix(self, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order."""
        _statements(db)
        return self._merged(db, prefix, prefix_upper_bound(prefix))

    def _merged(self, db: str, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        overlay = self._overlay(db, lo, hi)
        if not overlay:
            yield from _chunks(self._session, db, lo, hi)
            return
        yield from _merge(_chunks(self._session, db, lo, hi), overlay, descending=False)

    def items_before(self, db: str, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in descending key order, from the last key < `end` (None: the last key)."""
        _statements(db)
        return self._merged_before(db, end)

    def _merged_before(self, db: str, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        overlay = self._overlay(db, b"", end, descending=True)
        if not overlay:
            yield from _chunks_before(self._session, db, end)
            return
        yield from _merge(_chunks_before(self._session, db, end), overlay, descending=True)

    def count(self, db: str) -> int:
        """Committed rows, plus the rows this transaction added, minus those it deleted."""
        stmts = _statements(db)
        row = self._session.one(stmts.count)
        total = int(row[0]) if row else 0
        overlay = self._overlay(db, b"", None)
        if overlay:
            existing = self._session.one(stmts.existing, ([key for key, _ in overlay],))
            total -= int(existing[0]) if existing else 0
            total += sum(1 for _, value in overlay if value is not None)
        return total

    # -- writes -------------------------------------------------------------------------------------

    def put(self, db: str, key: bytes, value: bytes) -> None:
        """Insert or overwrite (in this transaction's overlay)."""
        _statements(db)
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("keys and values are bytes")
        _check_key(key)
        self._check_open()
        self._layers[-1].set(db, key, value)

    def delete(self, db: str, key: bytes) -> None:
        """Remove `key` if present."""
        _statements(db)
        self._check_open()
        self._layers[-1].set(db, key, None)

    def delete_prefix(self, db: str, prefix: bytes) -> int:
        """Remove every key that starts with `prefix`; returns how many."""
        stmts = _statements(db)
        self._check_open()
        upper = prefix_upper_bound(prefix)
        if upper is None:
            committed = self._session.rows(stmts.keys, (prefix,))
        else:
            committed = self._session.rows(stmts.keys_to, (prefix, upper))
        visible = {key for (key,) in committed if self._visible(db, key)}
        visible.update(key for key, value in self._overlay(db, prefix, upper) if value is not None)
        layer = self._layers[-1]
        for key in sorted(visible):
            layer.set(db, key, None)
        return len(visible)

    def _visible(self, db: str, key: bytes) -> bool:
        value = self._lookup(db, key)
        return value is _MISSING or value is not None

    def child(self) -> PostgresTxn:
        """A nested transaction: its writes join this one on `commit`, vanish on `abort`."""
        self._check_open()
        return PostgresTxn(self._store, self._session, [*self._layers, _Layer()], self._root or self, self._seen)

    def hold(self, owner: str, partitions: Collection[int]) -> dict[int, int]:
        """Lock the lease rows of `partitions` until this transaction ends and return those `owner`
        holds, with their epochs (the writer's fence: see `proxy.store.leases`)."""
        self._check_open()
        rows = self._session.rows(leases.FENCE, (owner, list(partitions)))
        return {int(partition): int(epoch) for partition, epoch in rows}

    def commit(self) -> None:
        """Nested: merge into the parent. Top level: flush every write and COMMIT (durably)."""
        self._check_open()
        self._ended = True
        if self._root is not None:
            self._layers[-1].merge_into(self._layers[-2])
            return
        try:
            self._store._flush(self._session, self._layers[0], self._seen)
        finally:
            self._store._write_ended()

    def abort(self) -> None:
        """Discard every write of this transaction (aborting twice is harmless)."""
        if self._ended:
            return
        self._ended = True
        if self._root is None:
            try:
                self._store._rollback(self._session)
            finally:
                self._store._write_ended()


class _RowLost(Exception):
    """Rows the transaction read were gone when it wrote them (deleted by another proxy)."""

    def __init__(self, db: str, count: int) -> None:
        super().__init__(str(count))
        self.db = db


class _FlushError(Exception):
    """A psycopg error of the flush, and whether COMMIT had been sent."""

    def __init__(self, error: psycopg.Error, conn: _Conn, committing: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.conn = conn
        self.committing = committing


# -- the store --------------------------------------------------------------------------------------


def _connection_lost(conn: _Conn, exc: BaseException) -> bool:
    """The connection is gone (as opposed to one statement failing on a live connection)."""
    if conn.closed or conn.broken:
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        return state is None or state.startswith(("08", "57P"))
    return isinstance(exc, psycopg.InterfaceError)


class PostgresStore:
    """The store over one PostgreSQL database (`durable_core.txn.Backend`).

    Args:
        url: ``postgresql://user:password@host:port/dbname`` (libpq URL; its parameters apply).
        partitions: the partition count of a database this store creates (an existing one keeps
            its own: `partitions` is then what it has).
        lease_time: seconds a proxy's leases outlive its heartbeat: PostgreSQL ends a transaction
            of this store idle for half of it (a paused proxy's locks must not outlive its lease).
    """

    def __init__(self, url: str, partitions: int = DEFAULT_PARTITIONS, lease_time: float = 5.0) -> None:
        if not is_postgres_url(url):
            raise ValueError("a PostgreSQL store needs a postgresql:// URL")
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1 to {MAX_PARTITIONS}")
        #: How many partitions the database has (read from it by `open`).
        self.partitions = partitions
        self._idle_in_transaction_ms = max(500, int(lease_time * 500))
        #: The URL as it may be shown (logs, errors, stats): the password replaced by ***.
        self.url = redact(url)
        params = conninfo_to_dict(url)
        self._secret = str(params.get("password") or "")
        for name, value in _CONNECT_DEFAULTS.items():
            params.setdefault(name, value)
        self._conninfo = make_conninfo("", **params)
        self._lock = threading.Lock()
        self._idle: list[_Conn] = []
        self._writer: _Conn | None = None
        self._writing = False
        self._open = False
        #: Set while the database is unreachable: callers fail at once, a thread reconnects.
        self._down: str | None = None
        self._probe: threading.Thread | None = None
        self.schema_version = 0
        self.reconnects = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    def open(self, wait: float = 0.0) -> None:
        """Connect, create or migrate the schema (once, under an advisory lock).

        Args:
            wait: keep trying to connect for up to this many seconds (a database starting too).

        Raises:
            StoreUnavailable: the database cannot be reached. StoreFailure: the schema is newer
            than this proxy's, or the migration failed.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                conn = self._connect()
                break
            except StoreUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_PROBE_INTERVAL)
        try:
            self.schema_version = self._migrate(conn)
            created_with = leases.partition_count(conn)
            if created_with != self.partitions:
                log.info("the database at %s has %d partitions (set when it was created)", self.url, created_with)
            self.partitions = created_with
        except psycopg.Error as exc:
            conn.close()
            raise self.failure(exc, conn) from None
        except BaseException:
            conn.close()
            raise
        self._warn_if_not_durable(conn)
        self._writer = conn
        self._down = None
        self._open = True

    def _warn_if_not_durable(self, conn: _Conn) -> None:
        """Say so when the server itself does not make commits durable (fsync or full_page_writes off)."""
        try:
            row = conn.execute(b"SELECT current_setting('fsync'), current_setting('full_page_writes')").fetchone()
        except psycopg.Error:
            return
        if row is not None and "off" in row:
            log.warning(
                "PostgreSQL at %s runs with fsync=%s, full_page_writes=%s: a crash of its machine can lose "
                "committed writes (see docs/scale-out.md)", self.url, row[0], row[1],
            )  # fmt: skip

    def close(self) -> None:
        """Close every connection (the background reconnection stops too)."""
        self._open = False
        with self._lock:
            idle, self._idle = self._idle, []
            writer, self._writer = self._writer, None
        for conn in [*idle, *([writer] if writer else [])]:
            conn.close()

    def info(self) -> dict[str, Any]:
        """What the stats show of the store (the URL without its password)."""
        return {
            "backend": "postgresql",
            "url": self.url,
            "schema_version": self.schema_version,
            "available": self._down is None,
            "reconnects": self.reconnects,
        }

    # -- connections --------------------------------------------------------------------------------

    def _connect(self) -> _Conn:
        """A new connection in autocommit, its session set up.

        Raises:
            StoreUnavailable: it could not connect (the store is marked down).
        """
        try:
            conn: _Conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            reason = self._reason(exc)
            self._mark_down(reason)
            raise StoreUnavailable(f"PostgreSQL at {self.url} is unavailable: {reason}") from None
        try:
            conn.execute(_SESSION.format(idle=self._idle_in_transaction_ms).encode())
            level = conn.execute(b"SHOW synchronous_commit").fetchone()
            if level is not None and level[0] in _WEAK_COMMIT:
                conn.execute(b"SET synchronous_commit = on")
        except psycopg.Error as exc:
            conn.close()
            raise self.failure(exc, conn) from None
        return conn

    def connect(self) -> _Conn:
        """A connection of its own (autocommit, the proxy's session settings) for work outside
        the store seam: the leases and the notices between proxies. The caller closes it.

        Raises:
            StoreUnavailable: it could not connect.
        """
        return self._connect()

    def on_own_connection(self, holder: list[_Conn | None], work: Callable[[_Conn], T]) -> T:
        """Run `work` on the connection `holder[0]` (opened if missing); a connection that died
        while idle (the database restarted) is replaced and `work` run once more. A failure is a
        `StoreFailure` that does not mark the store down (only its own connection broke).

        Raises:
            StoreFailure: `work` failed, or no connection could be opened.
        """
        for attempt in (1, 2):
            conn = holder[0]
            if conn is None or conn.closed or conn.broken:
                conn = holder[0] = self._connect()
            try:
                return work(conn)
            except psycopg.Error as exc:
                lost = _connection_lost(conn, exc)
                if lost:
                    conn.close()
                    holder[0] = None
                if not (lost and attempt == 1):
                    raise self.failure(exc, None) from None
        raise AssertionError("unreachable")

    def _reason(self, exc: BaseException) -> str:
        """The first line of a driver error, the password (should it appear) replaced by ***."""
        text = str(exc).strip().split("\n")[0] or type(exc).__name__
        if self._secret and len(self._secret) >= 3:
            text = text.replace(self._secret, "***")
        return text

    def failure(self, exc: BaseException, conn: _Conn | None) -> StoreFailure:
        """The store error for a psycopg error (the store is marked down when the connection is lost)."""
        reason = self._reason(exc)
        state = getattr(exc, "sqlstate", None)
        if conn is not None and _connection_lost(conn, exc):
            self._mark_down(reason)
            return StoreUnavailable(f"PostgreSQL at {self.url} is unavailable: {reason}")
        if state in _CONFLICT:
            return StoreConflict(f"PostgreSQL at {self.url}: a concurrent write won: {reason}")
        if state in _TRANSIENT:
            return StoreUnavailable(f"PostgreSQL at {self.url} is busy: {reason}")
        if state == "53100":
            return StoreFull(f"PostgreSQL at {self.url} is out of disk space: {reason}")
        return StoreFailure(f"PostgreSQL at {self.url} failed: {reason}")

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(f"PostgreSQL at {self.url} is unavailable: {self._down}; reconnecting")

    def _mark_down(self, reason: str) -> None:
        with self._lock:
            first = self._down is None
            self._down = reason
            if not self._open:  # `open` itself retries (or fails)
                return
            if self._probe is None or not self._probe.is_alive():
                self._probe = threading.Thread(target=self._reconnect, name="postgres-reconnect", daemon=True)
                self._probe.start()
        if first:
            log.error("PostgreSQL at %s is unavailable: %s; reconnecting in the background", self.url, reason)

    def _reconnect(self) -> None:
        """Background: try to connect until it works, then let callers in again. It probes on
        while the store is marked down again before it ends (a stale connection failing right
        after the outage), so that no `_mark_down` finds it alive yet about to end."""
        while self._open:
            time.sleep(_PROBE_INTERVAL)
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.Error as exc:
                with self._lock:
                    self._down = self._reason(exc)
                continue
            conn.close()
            with self._lock:
                # Connections opened before the outage are dead: drop them.
                stale, self._idle = self._idle, []
                self._down = None
                self.reconnects += 1
            for old in stale:
                old.close()
            log.warning("PostgreSQL at %s is reachable again", self.url)
            time.sleep(_PROBE_INTERVAL)
            with self._lock:
                if self._down is None:
                    self._probe = None
                    return
        with self._lock:
            self._probe = None

    def _take(self) -> tuple[_Conn, bool]:
        """An idle read connection, or a new one (True: new)."""
        with self._lock:
            if self._down is not None:
                raise self._unavailable()
            if self._idle:
                return self._idle.pop(), False
        return self._connect(), True

    def _give_back(self, conn: _Conn) -> None:
        if conn.closed or conn.broken:
            return
        with self._lock:
            if len(self._idle) < _POOL_IDLE and self._down is None:
                self._idle.append(conn)
                return
        conn.close()

    # -- the seam -----------------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[PostgresRead]:
        """A read transaction: REPEATABLE READ, READ ONLY, its snapshot taken now.

        Raises:
            StoreUnavailable: the database is unreachable.
        """
        if not self._open:
            raise RuntimeError("the store is not open")
        conn, fresh = self._take()
        session = _Session(self, conn, fresh, self._connect)
        try:
            session.execute(_BEGIN_SNAPSHOT.encode(), binary=False)
            yield PostgresRead(session)
        finally:
            conn = session.conn
            try:
                if not (conn.closed or conn.broken):
                    conn.execute(b"ROLLBACK")
            except psycopg.Error:
                conn.close()
            self._give_back(conn)

    def begin(self) -> PostgresTxn:
        """The write transaction (one at a time: the writer thread's).

        Raises:
            RuntimeError: another write transaction is open. StoreUnavailable: the database is
            unreachable (nothing is attempted until the background reconnection succeeds).
        """
        if not self._open:
            raise RuntimeError("the store is not open")
        with self._lock:
            if self._writing:
                raise RuntimeError("a write transaction is already open")
            if self._down is not None:
                raise self._unavailable()
            self._writing = True
        try:
            conn, fresh = self._writer, False
            if conn is None or conn.closed or conn.broken:
                conn, fresh = self._connect(), True
            self._writer = conn
            session = _Session(self, conn, fresh, self._new_writer)
            # Its first statement: a stale connection is replaced here, before any read.
            session.execute(_BEGIN_WRITE, binary=False)
        except BaseException:
            self._writing = False
            raise
        return PostgresTxn(self, session, [_Layer()], None)

    def get(self, db: str, key: bytes) -> bytes | None:
        """One value, read in its own transaction (as `proxy.store.lmdb.Store.get`)."""
        with self.read() as txn:
            return txn.get(db, key)

    def count(self, db: str) -> int:
        """Number of rows in a database, read in its own transaction."""
        with self.read() as txn:
            return txn.count(db)

    def _new_writer(self) -> _Conn:
        self._writer = self._connect()
        return self._writer

    def _rollback(self, session: _Session) -> None:
        """End an aborted write transaction (a broken connection ends it by itself)."""
        conn = session.conn
        if conn.closed or conn.broken:
            return
        try:
            conn.execute(b"ROLLBACK")
        except psycopg.Error:
            conn.close()

    def _write_ended(self) -> None:
        self._writing = False

    def _flush(self, session: _Session, layer: _Layer, seen: dict[str, set[bytes]]) -> None:
        """Write the overlay in one transaction; returns once it is committed (durably).

        Raises:
            StoreUnavailable: the connection broke (if during COMMIT, the outcome is unknown).
        """
        try:
            self._write(session.conn, layer, seen)
        except _RowLost as lost:
            self._rollback(session)
            raise StoreConflict(
                f"PostgreSQL at {self.url}: a concurrent write won: {lost} rows of {lost.db} read by this "
                "transaction were deleted meanwhile"
            ) from None
        except _FlushError as failed:
            # No second try on a new connection: the reads this flush depends on were made in the
            # transaction that broke (a stale connection was replaced by `begin`, before them).
            self._rollback(session)
            raise self._flush_failure(failed) from None

    def _flush_failure(self, failed: _FlushError) -> StoreFailure:
        failure = self.failure(failed.error, failed.conn)
        if failed.committing and isinstance(failure, StoreUnavailable):
            return StoreUnavailable(f"{failure.message} (during COMMIT: the write may or may not have been committed)")
        return failure

    def _write(self, conn: _Conn, layer: _Layer, seen: dict[str, set[bytes]]) -> None:
        """Flush and COMMIT. A row the transaction read is written by UPDATE (or DELETE) that must
        find it: at REPEATABLE READ, a row another transaction deleted and committed meanwhile
        raises no serialization failure for an upsert (it just inserts it again), so a rule that
        decided from that row would commit on a row that no longer is (`_RowLost`)."""
        committing = False
        try:
            for db, changes in layer.changes.items():
                stmts = _SQL[db]
                read = seen.get(db, set())
                present = [key for key, value in changes.items() if value is not None and key in read]
                keys = [key for key, value in changes.items() if value is not None and key not in read]
                gone_read = [key for key, value in changes.items() if value is None and key in read]
                gone = [key for key, value in changes.items() if value is None and key not in read]
                if present:
                    found = conn.execute(stmts.update, (present, [changes[key] for key in present]), binary=True)
                    if found.rowcount != len(present):
                        raise _RowLost(db, len(present) - found.rowcount)
                if keys:
                    conn.execute(stmts.upsert, (keys, [changes[key] for key in keys]), binary=True)
                if gone_read:
                    found = conn.execute(stmts.delete, (gone_read,), binary=True)
                    if found.rowcount != len(gone_read):
                        raise _RowLost(db, len(gone_read) - found.rowcount)
                if gone:
                    conn.execute(stmts.delete, (gone,), binary=True)
            committing = True
            conn.execute(b"COMMIT")
        except psycopg.Error as exc:
            raise _FlushError(exc, conn, committing) from None

    def _migrate(self, conn: _Conn) -> int:
        """Create or migrate the schema; returns its version."""
        version_table = sql.Identifier(SCHEMA, "schema_version")
        current = self._version(conn)
        if current == SCHEMA_VERSION:
            return current
        with conn.transaction():
            conn.execute(b"SELECT pg_advisory_xact_lock(%b)", (MIGRATION_LOCK,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (one boolean PRIMARY KEY DEFAULT true CHECK (one),"
                    " version integer NOT NULL)"
                ).format(version_table)
            )
            row = conn.execute(sql.SQL("SELECT version FROM {}").format(version_table)).fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreFailure(
                    f"the database at {self.url} has schema version {current}, newer than this proxy's "
                    f"{SCHEMA_VERSION}: upgrade the proxy"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for name in _MIGRATIONS[version - 1]:
                    conn.execute(
                        sql.SQL("CREATE TABLE {} (key bytea PRIMARY KEY, value bytea NOT NULL)").format(
                            sql.Identifier(SCHEMA, name)
                        )
                    )
                for statement in _DDL.get(version, ()):
                    conn.execute(statement.encode())
                if version == 4:
                    leases.seed(conn, self.partitions)
                log.info("PostgreSQL schema %s at %s migrated to version %d", SCHEMA, self.url, version)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (one, version) VALUES (true, %s) ON CONFLICT (one) DO UPDATE SET version = %s"
                ).format(version_table),
                (SCHEMA_VERSION, SCHEMA_VERSION),
            )
        return SCHEMA_VERSION

    def _version(self, conn: _Conn) -> int | None:
        """The schema version without taking the lock (None: no schema yet)."""
        row = conn.execute(b"SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_version",)).fetchone()
        if not row or not row[0]:
            return None
        found = conn.execute(sql.SQL("SELECT version FROM {}").format(sql.Identifier(SCHEMA, "schema_version")))
        version = found.fetchone()
        if version is not None and int(version[0]) > SCHEMA_VERSION:
            raise StoreFailure(
                f"the database at {self.url} has schema version {version[0]}, newer than this proxy's "
                f"{SCHEMA_VERSION}: upgrade the proxy"
            )
        return None if version is None else int(version[0])

    def truncate(self) -> None:
        """Remove every row of every database, in one transaction (tests: DELETE is faster than
        TRUNCATE on small tables). The store must be open and no write transaction running."""
        if self._writer is None:
            raise RuntimeError("the store is not open")
        statements = sql.SQL("; ").join(sql.SQL("DELETE FROM {}").format(sql.Identifier(SCHEMA, name)) for name in DBS)
        try:
            with self._writer.transaction():
                self._writer.execute(statements)
        except psycopg.Error as exc:
            raise self.failure(exc, self._writer) from None


def _merge(
    rows: Iterator[tuple[bytes, bytes]], overlay: list[tuple[bytes, object]], *, descending: bool
) -> Iterator[tuple[bytes, bytes]]:
    """Committed `rows` with a transaction's own writes (`overlay`, in the same key order) merged
    in: a written key replaces the committed one, a deleted one (value None) hides it."""
    written = iter(overlay)
    pending = next(written, None)
    for key, value in rows:
        while pending is not None and (pending[0] > key if descending else pending[0] < key):
            if isinstance(pending[1], bytes):
                yield pending[0], pending[1]
            pending = next(written, None)
        if pending is not None and pending[0] == key:
            if isinstance(pending[1], bytes):
                yield pending[0], pending[1]
            pending = next(written, None)
            continue
        yield key, value
    while pending is not None:
        if isinstance(pending[1], bytes):
            yield pending[0], pending[1]
        pending = next(written, None)
