"""The benchmark's handler service: trivial, N-step and crash-once handlers, plus a plain floor.

Served by ``uvicorn bench.handlers:application`` (uvloop, httptools, one worker). Paths:

* ``/invoke/Bench/...``, ``/discovery``, ``/health``: the durable handlers, via handlers_sdk.
* ``/plain/trivial`` and ``/plain/steps``: the same work without the proxy or the SDK (the floor):
  the body is the same JSON input, the steps are the same coroutine, called directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

import msgspec

from handlers_sdk import Context, Service, app

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

bench = Service("Bench")

#: invocation id -> wall-clock time of its simulated crash (``crash_once``).
_crashed_at: dict[str, float] = {}


async def step(i: int) -> int:
    """The body of one benchmark step: as cheap as a step can be, so the overhead is what shows."""
    return i


@bench.handler()
async def trivial(ctx: Context, value: Any) -> Any:
    """No steps: measures the invocation round trip alone."""
    return value


@bench.handler()
async def steps(ctx: Context, n: int) -> int:
    """`n` sequential durable steps."""
    total = 0
    for i in range(n):
        total += await ctx.run("s", step, i)
    return total


@bench.handler()
async def crash_once(ctx: Context, n: int) -> dict[str, float]:
    """`n` durable steps, then the first attempt crashes; the retry resumes from the journal.

    Returns the wall-clock time of the crash, so the caller can time crash -> result.
    """
    total = 0
    for i in range(n):
        total += await ctx.run("s", step, i)
    if ctx.invocation_id not in _crashed_at:
        _crashed_at[ctx.invocation_id] = time.time()
        raise RuntimeError("simulated crash after the last step")
    return {"crashed_at": _crashed_at.pop(ctx.invocation_id), "total": total}


#: invocation ids whose first attempt has started (``paced_steps``): a retry does not sleep.
_paced: set[str] = set()


@bench.handler()
async def paced_steps(ctx: Context, job: list[int]) -> int:
    """``[n, ms]``: `n` durable steps of `ms` milliseconds each in the first attempt, instantaneous
    in any later one (after a takeover the re-run steps are quick, so the failover time is the
    proxies' own, not the steps'). Keeps invocations in flight for the failover measurement.
    """
    n, ms = job
    first = ctx.invocation_id not in _paced
    _paced.add(ctx.invocation_id)

    async def paced(i: int) -> int:
        if first:
            await asyncio.sleep(ms / 1000)
        return i

    total = 0
    for i in range(n):
        total += await ctx.run("s", paced, i)
    _paced.discard(ctx.invocation_id)
    return total


@bench.handler()
async def sleeper(ctx: Context) -> None:
    """Sleeps for an hour: a suspended invocation holds no request, task or memory."""
    await ctx.sleep(timedelta(hours=1))


_durable = app([bench])
_JSON = [(b"content-type", b"application/json")]


async def _plain(path: str, receive: Receive, send: Send) -> None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks) or b"null"
    if path == "/plain/trivial":
        result: Any = msgspec.json.decode(body)
    else:
        n = msgspec.json.decode(body, type=int)
        total = 0
        for i in range(n):
            total += await step(i)
        result = total
    await send({"type": "http.response.start", "status": 200, "headers": _JSON})
    await send({"type": "http.response.body", "body": msgspec.json.encode(result)})


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point: the plain floor routes, else the durable handler app."""
    if scope["type"] == "http" and scope["path"].startswith("/plain/"):
        await _plain(scope["path"], receive, send)
        return
    await _durable(scope, receive, send)
