"""LocalRuntime keeps the proxy's concurrency and rate limits (the machine's `durable_core.flow`
rules): the handler options of the code apply, the rest wait in arrival order, a burst over a
rate starts later on the fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from handlers_sdk import Context, Limit, Service
from handlers_sdk.protocol import AwakeableEntry
from handlers_sdk.testing import InvocationSuspendedError, LocalRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]


def jobs(started: list[tuple[int, int]], rt_clock: list[LocalRuntime]) -> Service:
    """`hold` waits on an awakeable under a limit of 1; `tick` notes when it started, 2 per second."""
    svc = Service("Jobs")

    @svc.handler(limit=Limit(concurrency=1))
    async def hold(ctx: Context, n: int) -> int:
        _, future = ctx.awakeable(str)
        await ctx.run("note", lambda: started.append((n, 0)))
        await future
        return n

    @svc.handler(limit=Limit(rate=2, period_ms=1000))
    async def tick(ctx: Context, n: int) -> int:
        await ctx.run("note", lambda: started.append((n, rt_clock[0].clock.now_ms())))
        return n

    return svc


@pytest.mark.parametrize("mode", MODES)
async def test_a_concurrency_limit_in_the_code_queues_the_rest_in_order(mode: Any) -> None:
    started: list[tuple[int, int]] = []
    holder: list[LocalRuntime] = []
    rt = LocalRuntime(jobs(started, holder), mode=mode)
    holder.append(rt)
    first = await rt.start("Jobs", "hold", 1)
    second = await rt.start("Jobs", "hold", 2)
    third = await rt.start("Jobs", "hold", 3)
    assert (first.status, second.status, third.status) == ("suspended", "pending", "pending")
    assert (second.queue_position, third.queue_position) == (1, 2)
    assert second.attempts == 0  # never sent to the handler
    with pytest.raises(InvocationSuspendedError, match="number 2 in line for a concurrency limit"):
        third.result()

    entry = first.journal[0]
    assert isinstance(entry, AwakeableEntry)
    rt.resolve_awakeable(entry.id, "go")
    await rt.resume(first)
    assert first.result() == 1
    assert (second.status, third.status, third.queue_position) == ("suspended", "pending", 1)
    assert [n for n, _ in started] == [1, 2]


async def test_a_rate_limit_spreads_a_burst_on_the_fake_clock_and_drops_none() -> None:
    started: list[tuple[int, int]] = []
    holder: list[LocalRuntime] = []
    rt = LocalRuntime(jobs(started, holder))
    holder.append(rt)
    t0 = rt.clock.now_ms()
    invocations = [await rt.start("Jobs", "tick", n) for n in range(5)]
    assert [inv.result() for inv in invocations] == [0, 1, 2, 3, 4]
    assert [at - t0 for _, at in started] == [0, 0, 500, 1000, 1500]
