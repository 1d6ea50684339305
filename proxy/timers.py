"""Durable timers: sleeps and delayed starts, kept only in LMDB and fired by one loop.

Timers live in the ``timers`` database keyed by due time, so nothing per timer is held in
memory: the loop reads the first rows, fires what is due, and sleeps until the next one (at
most `_MAX_SLEEP` seconds, so a jump of the wall clock is noticed quickly). A fired timer's row
is deleted in the same transaction that completes its entry, so it fires once, late if the proxy
was down at the due time, and never again after the clock moves backwards. An invocation that
completes first has its pending sleep timers deleted by the transaction that completes it
(`entries.finish`); a delayed start whose invocation was cancelled or killed meanwhile fires as a
no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from proxy import faults
from proxy.clock import Clock
from proxy.entries import Effects, complete_entry, put_record, read_record, start_or_queue
from proxy.errors import ProxyError
from proxy.keys import START_INDEX, split_timer_key
from proxy.metrics import Metrics
from proxy.store import Store
from proxy.writer import Txn, Writer

__all__ = ["Timers"]

log = logging.getLogger("proxy.timers")

#: Longest the loop sleeps without looking at the wall clock again.
_MAX_SLEEP = 1.0
#: Timers fired per transaction.
_BATCH = 512


class Timers:
    """The timer loop over the ``timers`` database."""

    def __init__(
        self, store: Store, writer: Writer, clock: Clock, apply: object, metrics: Metrics | None = None
    ) -> None:
        self._store = store
        self._writer = writer
        self._clock = clock
        self._apply = apply
        self._wake = asyncio.Event()
        self._next_due: float = 0
        self._task: asyncio.Task[None] | None = None
        self.fired = 0
        self._metrics = metrics or Metrics()

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

    def _due(self, now: int) -> tuple[list[bytes], int | None]:
        """Keys of timers due by `now` (at most one batch), and the due time of the next one."""
        due: list[bytes] = []
        with self._store.read() as txn:
            for key in txn.cursor(db=self._store.dbs["timers"]).iternext(keys=True, values=False):
                due_ms, _, _ = split_timer_key(bytes(key))
                if due_ms > now or len(due) >= _BATCH:
                    return due, due_ms
                due.append(bytes(key))
        return due, None

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                now = self._clock.now_ms()
                due, next_due = self._due(now)
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _fire(self, keys: list[bytes], now: int) -> None:
        def write(txn: Txn) -> Effects:
            effects = Effects()
            for key in keys:
                if txn.get("timers", key) is None:
                    continue
                txn.delete("timers", key)
                _, invocation_id, index = split_timer_key(key)
                if index == START_INDEX:
                    record = read_record(txn, invocation_id)
                    if record is not None and record.status == "scheduled":
                        put_record(txn, start_or_queue(txn, record, now, effects))
                    continue
                try:
                    complete_entry(txn, invocation_id, index, now=now, effects=effects)
                except ProxyError as exc:  # purged or killed meanwhile: the timer is moot
                    log.info("timer of %s/%d dropped: %s", invocation_id, index, exc)
            return effects

        effects = await self._writer.submit(write)
        faults.hit("timers.after_fire")
        self.fired += len(keys)
        self._metrics.timers_fired.inc(amount=len(keys))
        self._apply(effects)  # type: ignore[operator]
