"""The schedule use cases of the running proxy: create, list, read, pause, resume and delete.

The rules are `durable_core.schedules` (through `Machine`); firing is the timer loop's
(`proxy.engine.timers`: a schedule's next fire is a durable timer). Writes return after commit.
"""

from __future__ import annotations

from collections.abc import Callable

from durable_core.effects import Effects
from durable_core.machine import Machine
from durable_core.schedules import ScheduleRecord
from durable_core.txn import Backend
from handlers_sdk.clock import Clock
from proxy.store.writer import Writer

__all__ = ["Scheduler"]


class Scheduler:
    """Schedules over the store, for the admin API and the CLI."""

    def __init__(
        self, store: Backend, writer: Writer, machine: Machine, clock: Clock, apply: Callable[[Effects], None]
    ) -> None:
        self._store = store
        self._writer = writer
        self._machine = machine
        self._clock = clock
        self._apply = apply

    async def create(self, schedule: ScheduleRecord) -> ScheduleRecord:
        """Store a new schedule and arm its first fire. Returns after commit.

        Raises:
            NotFound: unknown target. BadRequest: a bad id, spec, key or input. Conflict: the id is taken.
        """
        now = self._clock.now_ms()
        created, effects = await self._writer.submit(lambda txn: self._machine.create_schedule(txn, schedule, now=now))
        self._apply(effects)
        return created

    async def set_paused(self, schedule_id: str, paused: bool) -> ScheduleRecord:
        """Pause or resume a schedule. Returns after commit (NotFound if none)."""
        now = self._clock.now_ms()
        changed, effects = await self._writer.submit(
            lambda txn: self._machine.pause_schedule(txn, schedule_id, paused, now=now)
        )
        self._apply(effects)
        return changed

    async def delete(self, schedule_id: str) -> ScheduleRecord:
        """Remove a schedule and its timer. Returns after commit (NotFound if none)."""
        return await self._writer.submit(lambda txn: self._machine.delete_schedule(txn, schedule_id))

    def list(self) -> list[ScheduleRecord]:
        """Every schedule, by id."""
        with self._store.read() as txn:
            return self._machine.schedules(txn)

    def get(self, schedule_id: str) -> ScheduleRecord:
        """One schedule, or NotFound."""
        with self._store.read() as txn:
            return self._machine.schedule(txn, schedule_id)
