"""Handlers for the suspension, object and workflow end-to-end tests.

Every step body writes ``start``/``end`` lines to the ledger (see `tests.handlers.ledger`), with
the step's journal index encoded as ``<tag>*100 + position`` so tests can tell steps apart.

Run: ``uvicorn tests.handlers.durable:application`` (ack mode) or ``...:suspend_application``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import timedelta
from typing import Any

import msgspec

from handlers_sdk import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
    app,
    gather,
    select,
)
from tests.handlers.ledger import record

__all__ = [
    "Nap",
    "application",
    "approver",
    "caller",
    "child",
    "counter",
    "once_workflow",
    "queue",
    "signup",
    "sleeper",
    "suspend_application",
]

#: Seconds the child's slow step takes (tests kill the handler meanwhile).
CHILD_STEP_SLEEP = float(os.environ.get("DURABLE_CHILD_SLEEP", "0.5"))
QUEUE_STEP_SLEEP = float(os.environ.get("DURABLE_QUEUE_SLEEP", "0.2"))


async def step(inv: str, idx: int, sleep: float = 0.0) -> dict[str, Any]:
    """A ledgered step body."""
    nonce = secrets.token_hex(8)
    record(inv, idx, "start", nonce)
    if sleep:
        await asyncio.sleep(sleep)
    record(inv, idx, "end", nonce)
    return {"idx": idx, "nonce": nonce, "pid": os.getpid()}


class Nap(msgspec.Struct, frozen=True, kw_only=True):
    """Input of ``Sleeper/nap``."""

    seconds: float = 1.0
    ledger: bool = True


sleeper = Service("Sleeper")


@sleeper.handler()
async def nap(ctx: Context, job: Nap) -> dict[str, Any]:
    """A step, a durable sleep, a step."""
    before = await ctx.run("before", step, ctx.invocation_id, 0) if job.ledger else None
    await ctx.sleep(timedelta(seconds=job.seconds))
    after = await ctx.run("after", step, ctx.invocation_id, 1) if job.ledger else None
    return {"before": before, "after": after}


@sleeper.handler()
async def doze(ctx: Context, seconds: float) -> str:
    """Only a sleep: the cheapest dormant invocation (for the RSS test)."""
    await ctx.sleep(timedelta(seconds=seconds))
    return "awake"


@sleeper.handler()
async def helpers(ctx: Context) -> dict[str, Any]:
    """Deterministic helpers: the same values on every replay, across a suspension."""
    first = {"random": ctx.random().random(), "uuid": str(ctx.uuid()), "time": await ctx.time()}
    await ctx.sleep(timedelta(milliseconds=50))
    again = {"random": ctx.random().random(), "uuid": str(ctx.uuid())}
    return {"first": first, "again": again}


child = Service("Child")


@child.handler()
async def work(ctx: Context, n: int) -> int:
    """Two ledgered steps, the first one slow; fails terminally for negative input."""
    if n < 0:
        raise TerminalError(f"negative input {n}", status_code=422)
    await ctx.run("slow", step, ctx.invocation_id, 0, CHILD_STEP_SLEEP)
    await ctx.run("fast", step, ctx.invocation_id, 1)
    return n * 2


caller = Service("Caller")


@caller.handler()
async def call_child(ctx: Context, n: int) -> dict[str, Any]:
    """A step, a call to Child/work (the caller suspends meanwhile), a step."""
    await ctx.run("before", step, ctx.invocation_id, 0)
    future = ctx.service_call(work, n)
    try:
        result: int | str = await future
    except TerminalError as exc:
        result = f"child failed: {exc.status_code} {exc.message}"
    await ctx.run("after", step, ctx.invocation_id, 1)
    return {"child": future.invocation_id, "result": result}


@caller.handler()
async def fan_out(ctx: Context, n: int) -> list[int]:
    """`n` calls awaited together."""
    results: list[int] = await gather(*(ctx.service_call(work, i) for i in range(n)))
    return results


@caller.handler()
async def send_later(ctx: Context, seconds: float) -> str:
    """A delayed one-way call."""
    handle = ctx.service_send(work, 7, send_delay=timedelta(seconds=seconds))
    return handle.invocation_id


approver = Service("Approver")


@approver.handler()
async def wait(ctx: Context, timeout: float) -> dict[str, Any]:
    """Publish an awakeable id (in a step), then wait for it or for a timeout."""
    awk_id, approval = ctx.awakeable()
    await ctx.run("publish", lambda: awk_id)
    winner, value = await select(approval=approval, timeout=ctx.sleep(timedelta(seconds=timeout)))
    await ctx.run("after", step, ctx.invocation_id, 1)
    return {"winner": winner, "value": value}


@caller.handler()
async def call_queue(ctx: Context, item: int) -> list[int]:
    """Call an exclusive object handler (it may have to wait in the key's queue)."""
    result: list[int] = await ctx.object_call(push, "q", item)
    return result


@caller.handler()
async def run_once_twice(ctx: Context, key: str) -> list[str]:
    """Start a workflow's run twice from a handler: the second call must fail with 409."""
    outcomes: list[str] = []
    for _ in range(2):
        try:
            outcomes.append(await ctx.workflow_call(once, key, "x"))
        except TerminalError as exc:
            outcomes.append(f"{exc.status_code}: {exc.message}")
    return outcomes


counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    """Read, add, write: exclusive, so no update is ever lost."""
    count: int = await ctx.get("count") or 0
    ctx.set("count", count + delta)
    return count + delta


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    """A concurrent read."""
    count: int = await ctx.get("count") or 0
    return count


queue = VirtualObject("Queue")


@queue.handler()
async def push(ctx: ObjectContext, item: int) -> list[int]:
    """Append `item` to this key's list after a slow ledgered step (tests crash things meanwhile)."""
    items: list[int] = await ctx.get("items") or []
    await ctx.run("work", step, ctx.invocation_id, item, QUEUE_STEP_SLEEP)
    items = [*items, item]
    ctx.set("items", items)
    return items


@queue.handler(kind="shared")
async def items(ctx: ObjectSharedContext) -> list[int]:
    """The list so far."""
    value: list[int] = await ctx.get("items") or []
    return value


signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    """Wait for the email link to be clicked."""
    ctx.set("status", "waiting")
    await ctx.run("email", step, ctx.invocation_id, 0)
    secret = await ctx.promise("link").value()
    ctx.set("status", "done")
    return f"{email}:{secret}"


@signup.handler()
async def click(ctx: WorkflowSharedContext, secret: str) -> None:
    """Resolve the promise the run waits on."""
    await ctx.promise("link").resolve(secret)


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    """A query."""
    value: str | None = await ctx.get("status")
    return value


once_workflow = Workflow("Once")


@once_workflow.main()
async def once(ctx: WorkflowContext, value: str) -> str:
    """Completes at once."""
    return f"ran {ctx.key()} with {value}"


_SERVICES = [sleeper, child, caller, approver, counter, queue, signup, once_workflow]
application = app(_SERVICES)
suspend_application = app(_SERVICES, mode="suspend")
