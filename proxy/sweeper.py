"""The retention sweeper: purges completed invocations once their retention has passed.

Completed invocations are indexed by expiry time in the ``expiry`` database, so a sweep reads
only what is due. Purged pages go back to LMDB's free list and are reused, so under a steady
load the data file stops growing.
"""

from __future__ import annotations

import logging

from proxy.clock import Clock
from proxy.control import purge
from proxy.errors import ProxyError
from proxy.keys import split_expiry_key
from proxy.periodic import Periodic
from proxy.store import Store
from proxy.writer import Txn, Writer

__all__ = ["Sweeper"]

log = logging.getLogger("proxy.sweeper")
#: Invocations purged per transaction (keeps each commit short).
_BATCH = 500


class Sweeper:
    """Runs `sweep` every `interval` seconds."""

    def __init__(self, store: Store, writer: Writer, clock: Clock, interval: float) -> None:
        self._store = store
        self._writer = writer
        self._clock = clock
        self._periodic = Periodic("retention sweep", interval, self.sweep, log)
        self.purged = 0

    def start(self) -> None:
        """Start the loop."""
        self._periodic.start()

    async def close(self) -> None:
        """Stop the loop."""
        await self._periodic.close()

    async def sweep(self) -> int:
        """Purge every invocation whose retention has passed; returns how many."""
        total = 0
        while True:
            now = self._clock.now_ms()
            due: list[bytes] = []
            with self._store.read() as txn:
                for key in txn.cursor(db=self._store.dbs["expiry"]).iternext(keys=True, values=False):
                    expires_ms, _ = split_expiry_key(bytes(key))
                    if expires_ms > now or len(due) >= _BATCH:
                        break
                    due.append(bytes(key))
            if not due:
                return total

            def write(txn: Txn, keys: list[bytes] = due) -> int:
                purged = 0
                for key in keys:
                    txn.delete("expiry", key)
                    try:
                        purge(txn, split_expiry_key(key)[1])
                        purged += 1
                    except ProxyError:  # purged by hand already
                        pass
                return purged

            count = await self._writer.submit(write)
            total += count
            self.purged += count
            if len(due) < _BATCH:
                return total
