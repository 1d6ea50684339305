"""The store seam: what the state machine needs from a transactional, ordered key-value store.

Every durable rule is written against these protocols, never against a driver. A backend
(LMDB in the proxy, `durable_core.memory` in tests and the toolkit, PostgreSQL next) offers:

* named databases (`DBS`), each an ordered map of ``bytes -> bytes`` compared bytewise;
* read transactions (`ReadTxn`): point reads, ordered scans from a key or by prefix, and a
  reverse scan down from a key (newest-first listings);
* write transactions (`Txn`): the same reads, seeing the transaction's own writes, plus
  puts and deletes; `Txn.child` opens a nested transaction so a group-committing writer can
  discard one request's writes while the rest of its batch commits;
* `Backend.begin` / `Backend.read`, used by the writer and the read paths.

The conformance suite in ``tests/store/`` runs against every backend unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["DBS", "Backend", "ReadTxn", "Txn"]

#: Named databases and what they hold (keys are built by `durable_core.keys` and `keyed`).
DBS: dict[str, str] = {
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
    "meta": "counters (inbox_seq, flow_seq) and single rows: the retention, the signing key (PostgreSQL)",
    "schedules": "sha256(schedule id)[:16] -> ScheduleRecord (msgpack)",
    "held": "invocation id -> id of the invocation held until it completes (a schedule's queued fire)",
    "pinned": "deployment id NUL invocation id -> b'' for every invocation not completed, by deployment",
    "flow": "sha256(service)[:8] sha256(limit group)[:16] -> FlowGroup (msgpack: slots taken, queued, GCRA time)",
    "flow_queue": "flow row key be64 seq -> invocation id waiting for a slot of that limit group",
    "limits": "service name -> ServiceLimits (msgpack) an operator set, in place of the code's",
    "state_keys": "sha256(service, key) -> msgpack (service, key) of every object or workflow key with state",
}


class ReadTxn(Protocol):
    """A consistent view of the store."""

    def get(self, db: str, key: bytes) -> bytes | None:
        """The value of `key`, or None."""
        ...

    def items_from(self, db: str, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key order, from the first key >= `start`."""
        ...

    def items_with_prefix(self, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order."""
        ...

    def items_before(self, db: str, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in descending key order, from the last key < `end` (from the very
        last key when `end` is None) down to the first one."""
        ...

    def count(self, db: str) -> int:
        """Number of rows in `db`."""
        ...


class Txn(ReadTxn, Protocol):
    """A write transaction: reads see its own writes; nothing is visible to others before commit.

    Iterators returned by the scans must not be held across a write to the same database.
    """

    def put(self, db: str, key: bytes, value: bytes) -> None:
        """Insert or overwrite."""
        ...

    def delete(self, db: str, key: bytes) -> None:
        """Remove `key` if present."""
        ...

    def delete_prefix(self, db: str, prefix: bytes) -> int:
        """Remove every key that starts with `prefix`; returns how many."""
        ...

    def child(self) -> Txn:
        """A nested transaction: its writes join this one on `commit`, vanish on `abort`."""
        ...

    def commit(self) -> None:
        """Make the writes durable (top level) or part of the parent (nested)."""
        ...

    def abort(self) -> None:
        """Discard every write of this transaction."""
        ...


class Backend(Protocol):
    """A store: read transactions and (one at a time) write transactions."""

    def read(self) -> AbstractContextManager[ReadTxn]:
        """A read transaction, closed when the block ends."""
        ...

    def begin(self) -> Txn:
        """Begin the top-level write transaction (a backend allows one at a time)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
