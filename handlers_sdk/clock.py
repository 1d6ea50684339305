"""Time as a parameter: one `Clock` for the proxy's timeouts, retries, timer loop and sweeper and
for the SDK's deterministic time; `SystemClock` in production, one `FakeClock` in tests.

Wall-clock milliseconds (`Clock.now_ms`) are for stored deadlines and timestamps; monotonic
seconds (`Clock.monotonic`) for timeouts, so a jump of the wall clock never fires one early.
`FakeClock` moves only when a test says so (`advance`), firing what falls due on the way, as
Temporal's time-skipping test environment does: tests never wait on real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "TimerHandle"]


class TimerHandle(Protocol):
    """A callback scheduled with `Clock.call_later`."""

    def cancel(self) -> None:
        """Do not run the callback (a no-op once it ran)."""
        ...


class Clock(Protocol):
    """What the proxy and the SDK need to know about time."""

    def now_ms(self) -> int:
        """Wall-clock milliseconds since the epoch (stored deadlines, timestamps)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (timeouts), unaffected by clock jumps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of monotonic time."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """Run `callback` on the running event loop after `seconds` of monotonic time."""
        ...


class SystemClock:
    """The real clock, on the running asyncio loop."""

    def now_ms(self) -> int:
        """Wall-clock milliseconds."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep`."""
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """`loop.call_later`."""
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "due")

    def __init__(self, due: float, callback: Callable[[], object]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to; what falls due on the way runs then.

    Args:
        now_ms: the wall clock's start (the real time now by default).
    """

    def __init__(self, now_ms: int | None = None) -> None:
        self._now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        self._mono = 0.0
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        """The fake wall clock."""
        return self._now_ms

    def monotonic(self) -> float:
        """The fake monotonic clock (seconds since the clock was made)."""
        return self._mono

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by `seconds` (at once for 0 or less)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        handle = self.call_later(seconds, wake)
        try:
            await future
        finally:
            handle.cancel()

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """Run `callback` once the clock has been advanced by `seconds`."""
        timer = _FakeTimer(self._mono + max(0.0, seconds), callback)
        heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        return timer

    @property
    def next_due(self) -> float | None:
        """Seconds until the earliest scheduled callback (None if there is none)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return None if not self._timers else max(0.0, self._timers[0][0] - self._mono)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`, running the callbacks that fall due, in order.

        The wall clock moves by whole milliseconds (`seconds` rounded to the nearest one).
        """
        self._advance_ms(round(max(0.0, seconds) * 1000), max(0.0, seconds))

    def advance_to(self, now_ms: int) -> None:
        """Move the wall clock forward to exactly `now_ms` (never backwards), the monotonic one with it."""
        if now_ms > self._now_ms:
            delta_ms = now_ms - self._now_ms
            self._advance_ms(delta_ms, delta_ms / 1000)

    def _advance_ms(self, delta_ms: int, seconds: float) -> None:
        start_ms, start_mono = self._now_ms, self._mono
        target = start_mono + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._mono = max(self._mono, due)
            # Never past the end of this move, whatever the float rounding of `due` says.
            self._now_ms = min(start_ms + delta_ms, start_ms + round((self._mono - start_mono) * 1000))
            timer.cancelled = True
            timer.callback()
        self._mono = target
        self._now_ms = start_ms + delta_ms

    def jump(self, seconds: float) -> None:
        """Step the wall clock alone (forward or back), as an NTP correction does; timeouts on
        monotonic time are unaffected."""
        self._now_ms += int(seconds * 1000)
