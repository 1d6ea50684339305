"""Run the proxy with its wall clock shifted: ``python -m tests.handlers.clock_proxy <proxy flags>``.

The shift is the integer number of milliseconds in the file named by ``CLOCK_OFFSET_FILE``, read
again on every clock reading, so a test jumps the proxy's wall clock by rewriting the file. Only
``SystemClock.now_ms`` moves; monotonic time (timeouts) does not, as with a real clock step.
"""

from __future__ import annotations

import os
import time

from handlers_sdk import clock

_PATH = os.environ.get("CLOCK_OFFSET_FILE", "")


def _offset_ms() -> int:
    try:
        with open(_PATH) as f:
            return int(f.read().strip() or "0")
    except (FileNotFoundError, ValueError):
        return 0


def _now_ms(self: clock.SystemClock) -> int:
    return time.time_ns() // 1_000_000 + _offset_ms()


clock.SystemClock.now_ms = _now_ms  # type: ignore[method-assign]

if __name__ == "__main__":
    from proxy.__main__ import main

    main()
