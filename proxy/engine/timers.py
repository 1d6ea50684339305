"""Durable timers: sleeps, delayed starts and schedules' next fires, kept only in the store and
fired by one loop.

Timers live in the ``timers`` database keyed by due time, so nothing per timer is held in
memory: the loop reads the first rows, fires what is due, and sleeps until the next one (at
most `_MAX_SLEEP` seconds, so a jump of the wall clock is noticed quickly). A fired timer's row
is deleted in the same transaction that completes its entry, so it fires once, late if the proxy
was down at the due time, and never again after the clock moves backwards. An invocation that
completes first has its pending sleep timers deleted by the transaction that completes it
(`entries.finish`); a delayed start whose invocation was cancelled or killed meanwhile fires as a
no-op.

With several proxies on one database, each loop fires only the timers of the partitions its
proxy owns (`proxy.engine.leases`), each partition's in a transaction fenced by its lease: a
timer of a partition taken over meanwhile is left to its new owner, which fires it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from durable_core.effects import Effects
from durable_core.errors import Fenced
from durable_core.machine import Machine, TimerFire
from durable_core.txn import Backend
from handlers_sdk.clock import Clock
from proxy import faults
from proxy.engine.leases import Leases
from proxy.engine.metrics import Metrics
from proxy.store.writer import Fence, Writer

__all__ = ["Timers"]

log = logging.getLogger("proxy.engine.timers")

#: Longest the loop sleeps without looking at the wall clock again.
_MAX_SLEEP = 1.0
#: Timers fired per transaction.
_BATCH = 512


class Timers:
    """The timer loop over the ``timers`` database."""

    def __init__(
        self,
        store: Backend,
        writer: Writer,
        machine: Machine,
        clock: Clock,
        apply: Callable[[Effects], None],
        metrics: Metrics,
        leases: Leases | None = None,
    ) -> None:
        self._leases = leases
        self._store = store
        self._writer = writer
        self._machine = machine
        self._clock = clock
        self._apply = apply
        self._wake = asyncio.Event()
        self._next_due: float = 0
        self._task: asyncio.Task[None] | None = None
        self.fired = 0
        self._metrics = metrics

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._loop(), name="timers")

    async def close(self) -> None:
        """Stop the loop (timers stay on disk)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    def poke(self, due_ms: int) -> None:
        """A timer due at `due_ms` was committed: wake the loop if it is earlier than its plan."""
        if due_ms < self._next_due:
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                now = self._clock.now_ms()
                owns = self._leases.owns if self._leases is not None and self._leases.clustered else None
                with self._store.read() as txn:
                    due, next_due = self._machine.due_timers(txn, now, _BATCH, owns)
                if due:
                    await self._fire(due, now)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer loop failed; retrying")
                next_due = None
            self._next_due = next_due if next_due is not None else float("inf")
            delay = _MAX_SLEEP if next_due is None else min(_MAX_SLEEP, max(0.0, (next_due - now) / 1000))
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Until `delay` has passed on the clock or `poke` wakes the loop."""
        woken = asyncio.ensure_future(self._wake.wait())
        slept = asyncio.ensure_future(self._clock.sleep(delay))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()

    async def _fire(self, due: list[TimerFire], now: int) -> None:
        leases = self._leases
        if leases is None or not leases.clustered:
            await self._fire_some(due, now, None)
            return
        by_partition: dict[int, list[TimerFire]] = {}
        for fire in due:
            by_partition.setdefault(leases.partition(fire.invocation_id), []).append(fire)
        results = await asyncio.gather(
            *(self._fire_owned(fires, now, leases) for fires in by_partition.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Fenced):
                log.info("timers left to their partition's new owner: %s", result)
            elif isinstance(result, BaseException):
                raise result

    async def _fire_owned(self, due: list[TimerFire], now: int, leases: Leases) -> None:
        """Fire one partition's due timers as its owner (Fenced: it is not, or no longer)."""
        await self._fire_some(due, now, leases.fence(due[0].invocation_id))

    async def _fire_some(self, due: list[TimerFire], now: int, fence: Fence | None) -> None:
        effects, dropped = await self._writer.submit(lambda txn: self._machine.fire_timers(txn, due, now=now), fence)
        for reason in dropped:
            log.info("%s", reason)
        faults.hit("timers.after_fire")
        self.fired += len(due)
        self._metrics.timers_fired.inc(amount=len(due))
        self._apply(effects)
