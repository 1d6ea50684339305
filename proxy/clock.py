"""Clocks: wall time for stored deadlines, monotonic time for timeouts; a fake one for tests."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What the proxy needs to know about time."""

    def now_ms(self) -> int:
        """Wall-clock milliseconds since the epoch (stored deadlines, timestamps)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (timeouts), unaffected by clock jumps."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        """Wall-clock milliseconds."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms
        self._mono = 0.0

    def now_ms(self) -> int:
        """The fake wall clock."""
        return self._now_ms

    def monotonic(self) -> float:
        """The fake monotonic clock."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._now_ms += int(seconds * 1000)
        self._mono += seconds
