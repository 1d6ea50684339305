"""This proxy's share of the partitions: heartbeats, takeovers, hand-backs, and the fence of every
write it makes as an owner.

On LMDB (one proxy per data dir) the proxy owns everything and fences nothing. On PostgreSQL a
loop renews this proxy's heartbeat every `tick` (which renews all its leases at once, see
`proxy.store.leases`), takes partitions that have no live owner up to its fair share, and hands
back what is over it once every partition has an owner (`durable_core.partitions.plan_share`).

What this proxy believes it owns is valid until `lease_time` after the start of its last
successful heartbeat, less a margin: the database lets another proxy take a partition only after
the heartbeat's own expiry, which is later. Past that instant (the database unreachable, the
process paused) the proxy owns nothing until a heartbeat succeeds again, and `fence` refuses at
once. The database has the last word anyway: every owner write is checked against the lease row
in its own transaction (`proxy.store.writer`), so a proxy that is wrong about what it owns commits
nothing for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from durable_core.errors import Fenced
from durable_core.partitions import partition_of, plan_share
from proxy.store import StoreFailure, leases

if TYPE_CHECKING:
    import psycopg

    from proxy.store.postgres import PostgresStore

__all__ = ["Leases"]

log = logging.getLogger("proxy.engine.leases")

#: Share of the lease this proxy counts on after a heartbeat started (the rest covers clock
#: rate differences and the time the heartbeat took to reach the database).
_TRUST = 0.8


def _new_proxy_id() -> str:
    """Unique per process start, and telling a human which host and process it is."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    """The partitions this proxy drives.

    Args:
        store: the PostgreSQL store, or None (LMDB: one proxy owns every partition, nothing is fenced).
        lease_time: seconds a heartbeat keeps this proxy's leases.
    """

    def __init__(self, store: PostgresStore | None, lease_time: float) -> None:
        self._store = store
        self.lease_time = lease_time
        #: How often the heartbeat runs (a few times per lease, at most every second).
        self.tick = min(1.0, max(0.1, lease_time / 8))
        self.proxy_id = _new_proxy_id()
        #: partition -> epoch this proxy holds (LMDB: empty, `owns` is always True).
        self.owned: dict[int, int] = {}
        #: Live proxies (this one included) -> ms their heartbeat has left, at the last heartbeat.
        self.members: dict[str, int] = {}
        self._valid_until = 0.0
        #: The heartbeat's own connection (a one-item holder: `PostgresStore.on_own_connection`).
        self._conn: list[psycopg.Connection[tuple[Any, ...]] | None] = [None]
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Called on the event loop with partitions just taken (resume their work) or lost (stop it).
        self.on_gained: Callable[[set[int]], None] = lambda partitions: None
        self.on_lost: Callable[[set[int]], None] = lambda partitions: None
        self.takeovers = 0

    @property
    def clustered(self) -> bool:
        """True on PostgreSQL: partitions are shared with other proxies."""
        return self._store is not None

    @property
    def partitions(self) -> int:
        """How many partitions the store has (1 on LMDB)."""
        return self._store.partitions if self._store is not None else 1

    def partition(self, invocation_id: str) -> int:
        """The partition of an invocation (or a schedule's timer id)."""
        return partition_of(invocation_id, self.partitions) if self._store is not None else 0

    def valid(self) -> bool:
        """True while the last heartbeat vouches for what this proxy owns."""
        return self._store is None or time.monotonic() < self._valid_until

    def owns(self, invocation_id: str) -> bool:
        """True if this proxy drives the invocation's partition now."""
        if self._store is None:
            return True
        return self.valid() and self.partition(invocation_id) in self.owned

    def owns_partition(self, partition: int) -> bool:
        """True if this proxy holds `partition` now."""
        return self._store is None or (self.valid() and partition in self.owned)

    def fence(self, invocation_id: str) -> tuple[int, int] | None:
        """The fence of a write acting as the owner of the invocation (None on LMDB).

        Raises:
            Fenced: this proxy does not own its partition (now, or as far as it knows).
        """
        if self._store is None:
            return None
        partition = self.partition(invocation_id)
        epoch = self.owned.get(partition)
        if epoch is None or not self.valid():
            raise Fenced(f"partition {partition} of {invocation_id} is not owned by this proxy")
        return partition, epoch

    # -- the loop ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join: the first heartbeat (and takeover) before the proxy serves, then the loop."""
        if self._store is None:
            return
        try:
            await self._beat()
        except StoreFailure as exc:
            log.error("first heartbeat failed: %s; retrying", exc)
        self._task = asyncio.create_task(self._loop(), name="leases")

    async def close(self) -> None:
        """Leave: stop the loop, hand every lease back at once (another proxy takes them over
        without waiting for them to expire) and drop the heartbeat."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        if self._store is None:
            return
        lost, self.owned = set(self.owned), {}
        if lost:
            self.on_lost(lost)
        try:
            await asyncio.to_thread(self._leave)
        except Exception as exc:  # noqa: BLE001 - they expire by themselves
            log.warning("could not hand the leases back (they expire in %.1f s): %s", self.lease_time, exc)
        conn, self._conn[0] = self._conn[0], None
        if conn is not None:
            conn.close()

    async def _loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.tick)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop lives on; what it owns lapses by itself
                log.warning("heartbeat failed: %s", exc)
                if self.owned and not self.valid():
                    lost, self.owned = set(self.owned), {}
                    log.error("leases of %d partitions lapsed (no heartbeat): stopping their work", len(lost))
                    self.on_lost(lost)

    async def _beat(self) -> None:
        started = time.monotonic()
        ownership, taken, release = await asyncio.to_thread(self._heartbeat)
        now_owned = dict(ownership.owned)
        now_owned.update(taken)
        previously = self.owned
        lost = {p for p, epoch in previously.items() if now_owned.get(p) != epoch}
        gained = {p for p, epoch in now_owned.items() if previously.get(p) != epoch}
        self.members = ownership.members
        self._valid_until = started + self.lease_time * _TRUST
        self.owned = now_owned
        if taken:
            self.takeovers += len(taken)
            log.info("took partitions %s", sorted(taken))
        if lost:
            log.warning("partitions %s are no longer owned by this proxy", sorted(lost))
            self.on_lost(lost)
        if gained:
            self.on_gained(gained)
        if release:
            # Stop acting as owner first; the database row changes after.
            for partition in release:
                self.owned.pop(partition, None)
            self.on_lost(set(release))
            log.info("handing back partitions %s to the proxies that joined", release)
            await asyncio.to_thread(self._release, release)

    # -- on the worker thread -----------------------------------------------------------------------

    def _heartbeat(self) -> tuple[leases.Ownership, dict[int, int], list[int]]:
        assert self._store is not None
        lease_ms = int(self.lease_time * 1000)
        ownership = self._store.on_own_connection(self._conn, lambda c: leases.heartbeat(c, self.proxy_id, lease_ms))
        share = plan_share(set(ownership.owned), self.partitions, len(ownership.members), ownership.free)
        taken: dict[int, int] = {}
        if share.take:
            taken = self._store.on_own_connection(self._conn, lambda c: leases.take(c, self.proxy_id, share.take))
        return ownership, taken, share.release

    def _release(self, partitions: list[int]) -> None:
        assert self._store is not None
        self._store.on_own_connection(self._conn, lambda c: leases.release(c, self.proxy_id, partitions))

    def _leave(self) -> None:
        assert self._store is not None
        self._store.on_own_connection(self._conn, lambda c: leases.leave(c, self.proxy_id))

    def describe(self) -> dict[str, Any]:
        """What ``GET /cluster`` shows."""
        if self._store is None:
            return {"mode": "single", "proxy": self.proxy_id, "partitions": 1, "owned": [{"partition": 0, "epoch": 0}]}
        return {
            "mode": "cluster",
            "proxy": self.proxy_id,
            "lease_time": self.lease_time,
            "partitions": self.partitions,
            "valid": self.valid(),
            "owned": [{"partition": p, "epoch": e} for p, e in sorted(self.owned.items())],
            "members": [{"proxy": m, "expires_in_ms": left} for m, left in sorted(self.members.items())],
            "takeovers": self.takeovers,
        }
