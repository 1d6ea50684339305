"""A `Machine` over a `MemoryStore`, driven the way the proxy's writer drives it, for unit tests.

`World.write(fn)` runs ``fn(txn)`` in a nested transaction of a fresh write transaction and
commits, as `proxy.store.writer.Writer` does for one request of a batch: if ``fn`` raises, its
writes are discarded (the child is aborted) and the error propagates. Time is fixed (`NOW`,
or whatever a test sets `World.now` to); ids are deterministic; services come from a dict.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TypeVar

import msgspec

from durable_core.effects import Effects
from durable_core.journal import Resolver, resolve_in
from durable_core.keys import new_invocation_id
from durable_core.lifecycle import AttemptFailure
from durable_core.machine import Limits, Machine
from durable_core.memory import MemoryStore
from durable_core.records import InvocationRecord, ServiceRecord, Status
from durable_core.retry import RetryPolicy
from durable_core.rows import put_record
from durable_core.txn import ReadTxn, Txn
from handlers_sdk.protocol import Entry, JournalItem, Outcome, decode_item

__all__ = [
    "MAX_ATTEMPTS",
    "NOW",
    "RETENTION_MS",
    "RETRY_INITIAL_MS",
    "SERVICES",
    "World",
    "limits",
    "resolver",
]

T = TypeVar("T")

#: The fixed clock of every test (ms).
NOW = 1_700_000_000_000
RETENTION_MS = 60_000
RETRY_INITIAL_MS = 100
MAX_ATTEMPTS = 3

#: The services every world knows: a plain service, a virtual object, a workflow.
SERVICES: dict[str, ServiceRecord] = {
    "Greeter": ServiceRecord(name="Greeter", type="service", handlers={"greet": "", "shout": ""}, deployment_id="dp_a"),
    "Counter": ServiceRecord(
        name="Counter", type="object", handlers={"add": "exclusive", "get": "shared"}, deployment_id="dp_a"
    ),
    "Signup": ServiceRecord(
        name="Signup", type="workflow", handlers={"run": "workflow", "status": "shared"}, deployment_id="dp_b"
    ),
}


def limits(*, max_journal_entries: int = 50, max_entry_bytes: int = 2_048) -> Limits:
    """Small limits with a jitter-free retry policy: 100 ms doubling, pause after 3 failures."""
    policy = RetryPolicy(
        initial_ms=RETRY_INITIAL_MS,
        factor=2.0,
        max_ms=1_000,
        max_attempts=MAX_ATTEMPTS,
        jitter=0.0,
        rng=random.Random(0),
    )
    return Limits(
        max_journal_entries=max_journal_entries,
        max_entry_bytes=max_entry_bytes,
        retention_ms=RETENTION_MS,
        retry=policy,
    )


def resolver(services: Mapping[str, ServiceRecord]) -> Resolver:
    """The machine's resolver over a dict of services (`journal.resolve_in`, as the proxy's
    registry and the toolkit use): NotFound for an unknown service or handler."""
    return lambda service, handler: resolve_in(services, service, handler)


class World:
    """A memory store, a machine over it, a fixed clock and shortcuts for the common use cases."""

    def __init__(self, machine_limits: Limits | None = None) -> None:
        self.store = MemoryStore()
        self.services: dict[str, ServiceRecord] = dict(SERVICES)
        self.machine = Machine(machine_limits or limits(), resolver(self.services))
        self.now = NOW
        self._ids = 0

    # -- transactions ---------------------------------------------------------------------------

    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run `fn` as one request of a writer batch: in a child transaction, then commit.

        If `fn` raises, the child is aborted (its writes vanish), the batch still commits, and
        the error propagates.
        """
        txn = self.store.begin()
        child = txn.child()
        try:
            result = fn(child)
        except BaseException:
            child.abort()
            txn.commit()
            raise
        child.commit()
        txn.commit()
        return result

    def read(self, fn: Callable[[ReadTxn], T]) -> T:
        """Run `fn` in a read transaction."""
        with self.store.read() as txn:
            return fn(txn)

    # -- invocations ----------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh invocation id, in creation order."""
        self._ids += 1
        return new_invocation_id(self.now, entropy=self._ids.to_bytes(10, "big"))

    def submit(
        self,
        service: str = "Greeter",
        handler: str = "greet",
        key: str = "",
        *,
        body: bytes = b'{"n":1}',
        idempotency: str | None = None,
        delay_ms: int = 0,
    ) -> tuple[InvocationRecord, bool, Effects]:
        """An invocation from outside (`new_record` then `invoke`, as ingress does)."""
        record = self.machine.new_record(
            self.new_id(), service, handler, key, now=self.now, random_seed=7, idempotency=idempotency
        )
        return self.write(lambda txn: self.machine.invoke(txn, record, body, now=self.now, delay_ms=delay_ms))

    def start(
        self,
        service: str = "Greeter",
        handler: str = "greet",
        key: str = "",
        *,
        body: bytes = b'{"n":1}',
        idempotency: str | None = None,
        delay_ms: int = 0,
    ) -> InvocationRecord:
        """`submit`, returning only the stored record."""
        return self.submit(service, handler, key, body=body, idempotency=idempotency, delay_ms=delay_ms)[0]

    def put(self, record: InvocationRecord) -> InvocationRecord:
        """Store a record as it is (to set up a status directly), keeping the `active` index."""

        def store(txn: Txn) -> None:
            put_record(txn, record)
            if not record.is_completed:
                txn.put("active", record.id.encode(), b"")

        self.write(store)
        return record

    def with_status(self, status: Status, **fields: object) -> InvocationRecord:
        """A started Greeter invocation, then rewritten with `status` (and `fields`)."""
        record = self.start()
        token = "tok" if status == "running" else ""
        return self.put(msgspec.structs.replace(record, status=status, token=token, **fields))

    def record(self, invocation_id: str) -> InvocationRecord:
        """The stored record (NotFound if none)."""
        return self.read(lambda txn: self.machine.get(txn, invocation_id))

    def exists(self, invocation_id: str) -> bool:
        """True if the invocation has a record."""
        return self.read(lambda txn: txn.get("invocations", invocation_id.encode())) is not None

    def items(self, invocation_id: str) -> list[JournalItem]:
        """The stored journal, decoded."""
        return [decode_item(row) for row in self.read(lambda txn: self.machine.journal(txn, invocation_id))]

    def entry(self, invocation_id: str, index: int) -> Entry:
        """The stored entry at `index` (AssertionError if none)."""
        found = [item.entry for item in self.items(invocation_id) if item.index == index]
        assert found, f"no entry {index} in {invocation_id}"
        return found[0]

    def keys(self, db: str) -> list[bytes]:
        """Every key of `db`, in order."""
        return self.read(lambda txn: [key for key, _ in txn.items_from(db, b"")])

    def get_row(self, db: str, key: bytes) -> bytes | None:
        """One committed row."""
        return self.read(lambda txn: txn.get(db, key))

    # -- attempts -------------------------------------------------------------------------------

    def append(self, record: InvocationRecord, index: int, entry: Entry) -> tuple[Effects, Entry | None]:
        """Journal one entry of `record`'s current attempt (a step ack)."""
        item = JournalItem(index=index, entry=entry)
        return self.write(
            lambda txn: self.machine.append(txn, record.id, record.attempt, record.token, item, now=self.now)
        )

    def settle(
        self, record: InvocationRecord, result: Outcome | AttemptFailure, *, next_token: str = "tok-next"
    ) -> tuple[InvocationRecord, Effects, Outcome | AttemptFailure]:
        """Settle `record`'s current attempt with `result`."""
        return self.write(
            lambda txn: self.machine.settle(
                txn, record.id, record.attempt, record.token, result, now=self.now, next_token=next_token
            )
        )

    def act(self, action: str, invocation_id: str, deployment_id: str = "") -> tuple[InvocationRecord | None, Effects]:
        """An operator action."""
        return self.write(
            lambda txn: self.machine.act(txn, action, invocation_id, now=self.now, deployment_id=deployment_id)
        )

    def fire_due(self, now: int | None = None, limit: int = 100) -> tuple[Effects, list[str]]:
        """Fire every timer due by `now` (default: the world's clock)."""
        at = self.now if now is None else now
        due, _ = self.read(lambda txn: self.machine.due_timers(txn, at, limit))
        return self.write(lambda txn: self.machine.fire_timers(txn, due, now=at))
