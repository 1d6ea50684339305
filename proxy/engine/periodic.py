"""A background task that runs one coroutine function every few seconds, and survives its errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from handlers_sdk.clock import Clock

__all__ = ["Periodic"]


class Periodic:
    """Runs `job` every `interval` seconds from `start` until `close`; a failing run is logged, not fatal."""

    def __init__(
        self, name: str, interval: float, job: Callable[[], Awaitable[Any]], log: logging.Logger, clock: Clock
    ) -> None:
        self._name = name
        self._clock = clock
        self._interval = interval
        self._job = job
        self._log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def close(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            try:
                await self._job()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop outlives one failed run
                self._log.exception("%s failed", self._name)
