"""Handlers under concurrency and rate limits, for the end-to-end tests of flow control.

Each run appends JSON lines ``{"inv", "kind": "start"|"end", "t"}`` (wall time in seconds, one
``write`` per line so lines survive SIGKILL whole) to the O_APPEND file named by ``LIMITS_LEDGER``,
inside one journaled step: the ledger shows when each invocation's work ran, so a test can count
how many ran at once and in which order they started.

* ``Limited/slow``: at most 2 at once (``Limit(concurrency=2)``); the step sleeps ``seconds``.
* ``Limited/paced``: at most 5 starts a second, one at a time (``Limit(rate=5, burst=1)``).

Run: ``uvicorn tests.handlers.limited:application``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from handlers_sdk import Context, Limit, Service, app

__all__ = ["application", "limited"]

LEDGER = os.environ.get("LIMITS_LEDGER", "")

limited = Service("Limited")


def _write(inv: str, kind: str) -> None:
    line = json.dumps({"inv": inv, "kind": kind, "t": time.time()}) + "\n"
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _work(inv: str, seconds: float) -> str:
    _write(inv, "start")
    await asyncio.sleep(seconds)
    _write(inv, "end")
    return inv


@limited.handler(limit=Limit(concurrency=2))
async def slow(ctx: Context, seconds: float) -> str:
    """One journaled step that takes `seconds`, at most two invocations at once."""
    return await ctx.run("work", _work, ctx.invocation_id, seconds)


@limited.handler(limit=Limit(rate=5, period_ms=1000, burst=1))
async def paced(ctx: Context, n: int) -> int:
    """One short journaled step, at most five starts a second."""
    await ctx.run("work", _work, ctx.invocation_id, 0.0)
    return n


application = app([limited])
