"""Handlers fired by schedules, for the end-to-end tests of schedules and deployments.

``Tick/tick`` appends one JSON line per run to the O_APPEND file named by ``SCHEDULE_LEDGER``
(one ``write`` per line, so lines survive SIGKILL whole): the schedule id, the fire time and the
missed-fires count from the headers the proxy sets, the invocation id and the wall time. A run
that is retried writes its line again, with the same invocation id: a fire that ran twice as two
invocations shows up as two ids for one fire time.

``Tick/heartbeat`` declares a schedule in code (every second, cron with seconds) and writes the
same line; ``TICK_HEARTBEAT=0`` leaves the schedule out (tests that count pinned invocations).
``Tick/hold`` sleeps ``{"seconds": n}`` durably, to keep invocations pinned.

Run: ``uvicorn tests.handlers.scheduled:application``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Any

from handlers_sdk import Context, Service, app
from handlers_sdk.protocol import ScheduleInfo

__all__ = ["application", "tick"]

LEDGER = os.environ.get("SCHEDULE_LEDGER", "")
HEARTBEAT = ScheduleInfo(cron="* * * * * *", overlap="allow") if os.environ.get("TICK_HEARTBEAT") != "0" else None

tick = Service("Tick")


def _write(ctx: Context, handler: str) -> None:
    headers = ctx.headers
    line = {
        "handler": handler,
        "schedule": headers.get("x-durable-schedule", ""),
        "fire_ms": int(headers.get("x-durable-fire-time", "0")),
        "missed": int(headers.get("x-durable-missed-fires", "0")),
        "invocation": ctx.invocation_id,
        "wall_ms": int(time.time() * 1000),
        "port": os.environ.get("HANDLER_PORT", ""),
    }
    if LEDGER:
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)


@tick.handler()
async def run(ctx: Context, _: Any = None) -> str:
    """Write a ledger line."""
    _write(ctx, "run")
    return "ok"


@tick.handler(schedule=HEARTBEAT)
async def heartbeat(ctx: Context) -> str:
    """Declared in code: fired every second."""
    _write(ctx, "heartbeat")
    return "ok"


@tick.handler()
async def hold(ctx: Context, job: dict[str, float]) -> str:
    """Sleep durably for ``job["seconds"]`` (pinned to its deployment meanwhile), then write a line."""
    await ctx.sleep(timedelta(seconds=job["seconds"]))
    _write(ctx, "hold")
    return "held"


application = app([tick])
