"""The retention sweeper: purges completed invocations once their retention has passed.

Completed invocations are indexed by expiry time in the ``expiry`` database, so a sweep reads
only what is due. Purged pages go back to LMDB's free list and are reused, so under a steady
load the data file stops growing.

With several proxies on one database, only the owner of partition 0 sweeps (`leader`): sweeps
from every proxy would be correct, only racing each other for the same rows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from durable_core.machine import Machine
from durable_core.txn import Backend
from handlers_sdk.clock import Clock
from proxy.engine.periodic import Periodic
from proxy.store.writer import Writer

__all__ = ["Sweeper"]

log = logging.getLogger("proxy.engine.sweeper")
#: Invocations purged per transaction (keeps each commit short).
_BATCH = 500


class Sweeper:
    """Runs `sweep` every `interval` seconds."""

    def __init__(
        self,
        store: Backend,
        writer: Writer,
        machine: Machine,
        clock: Clock,
        interval: float,
        leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._leader = leader
        self._writer = writer
        self._machine = machine
        self._clock = clock
        self._periodic = Periodic("retention sweep", interval, self.sweep, log, clock)
        self.purged = 0

    def start(self) -> None:
        """Start the loop."""
        self._periodic.start()

    async def close(self) -> None:
        """Stop the loop."""
        await self._periodic.close()

    async def apply_retention(self) -> int:
        """Re-stamp stored completed invocations with the current retention (once after a change
        of ``--retention``; a no-op when it did not change), then sweep; returns how many rows
        moved. Runs in batches, so the proxy serves meanwhile."""
        with self._store.read() as txn:
            if self._machine.retention_applied(txn):
                return 0
        log.info("applying the retention of %d ms to completed invocations", self._machine.limits.retention_ms)
        cursor: bytes | None = b""
        batches = 0
        while cursor is not None:
            cursor = await self._writer.submit(
                functools.partial(self._machine.apply_retention, after=cursor, limit=_BATCH)
            )
            batches += 1
        await self.sweep()
        return batches

    async def apply_retention_logged(self) -> None:
        """`apply_retention`, logging (not raising) a failure: it is tried again at the next start."""
        try:
            await self.apply_retention()
        except Exception:  # a background task: the next start tries again
            log.exception("applying the retention to stored invocations failed")

    async def sweep(self) -> int:
        """Purge every invocation whose retention has passed; returns how many (none unless this
        proxy is the one that sweeps)."""
        total = 0
        if not self._leader():
            return total
        while True:
            with self._store.read() as txn:
                due = self._machine.due_expiries(txn, self._clock.now_ms(), _BATCH)
            if not due:
                return total
            count = await self._writer.submit(functools.partial(self._machine.sweep, keys=due))
            total += count
            self.purged += count
            if len(due) < _BATCH:
                return total
