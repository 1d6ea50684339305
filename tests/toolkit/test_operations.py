"""LocalRuntime's operator actions and delayed sends, as the proxy does them: cancel (the handler's
compensation runs), kill (no handler code runs again), both reaching open calls; delayed sends start
on the fake clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from examples.orders import Order, orders
from handlers_sdk import Context, ObjectContext, Service, TerminalError, VirtualObject
from handlers_sdk.protocol import AwakeableEntry, CancelEntry, RunEntry, SleepEntry
from handlers_sdk.testing import Invocation, LocalRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]


def saga(log: list[str]) -> Service:
    """A charge, a wait on an awakeable (suspended), then shipping; a TerminalError refunds."""
    svc = Service("Saga")

    async def effect(name: str) -> str:
        log.append(name)
        return name

    @svc.handler()
    async def order(ctx: Context) -> str:
        await ctx.run("charge", effect, "charge")
        approved: str | None = None
        try:
            _, approval = ctx.awakeable(str)
            approved = await approval
            await ctx.run("ship", effect, "ship")
        except TerminalError:
            # Which compensation runs depends on how far the handler got before the cancellation.
            await ctx.run("refund" if approved is None else "refund-approved", effect, "refund")
            await ctx.run("release", effect, "release")
            raise
        return "shipped"

    @svc.handler()
    async def parent(ctx: Context) -> str:
        await ctx.run("parent-step", effect, "parent-step")
        try:
            result: str = await ctx.service_call(order)
        except TerminalError as exc:
            await ctx.run("parent-undo", effect, f"parent saw {exc.status_code}")
            raise
        return result

    return svc


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_raises_in_the_waiting_handler_and_its_compensation_runs(mode: Any) -> None:
    log: list[str] = []
    rt = LocalRuntime(saga(log), mode=mode)
    inv = await rt.start("Saga", "order")
    assert inv.status == "suspended" and log == ["charge"]
    await rt.cancel(inv)
    assert inv.is_done
    with pytest.raises(TerminalError) as caught:
        inv.result()
    assert (caught.value.status_code, caught.value.message) == (409, "invocation cancelled")
    assert log == ["charge", "refund", "release"]  # compensation ran once, ship never
    # Where the cancellation was raised is journaled (index 2), so every replay raises it there.
    assert isinstance(inv.journal[2], CancelEntry)
    assert inv.body_counts() == {0: 1, 3: 1, 4: 1}
    with pytest.raises(ValueError, match="already completed"):
        await rt.cancel(inv)


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_reaches_the_invocation_a_call_waits_for(mode: Any) -> None:
    log: list[str] = []
    rt = LocalRuntime(saga(log), mode=mode)
    parent = await rt.start("Saga", "parent")
    assert parent.status == "suspended"
    child = next(i for i in rt.invocations.values() if i.handler == "order")
    await rt.cancel(parent.id)
    assert child.is_done and parent.is_done
    assert log == ["parent-step", "charge", "refund", "release", "parent saw 409"]
    with pytest.raises(TerminalError, match="invocation cancelled"):
        parent.result()


@pytest.mark.parametrize("mode", MODES)
async def test_kill_completes_at_once_and_no_handler_code_runs(mode: Any) -> None:
    log: list[str] = []
    rt = LocalRuntime(saga(log), mode=mode)
    parent = await rt.start("Saga", "parent")
    child = next(i for i in rt.invocations.values() if i.handler == "order")
    attempts = (parent.attempts, child.attempts)
    await rt.kill(parent)
    assert (parent.attempts, child.attempts) == attempts  # not run again
    assert log == ["parent-step", "charge"]  # no compensation
    for inv in (parent, child):
        with pytest.raises(TerminalError, match="invocation killed"):
            inv.result()


async def test_cancel_of_an_invocation_pending_for_its_key_never_runs_it() -> None:
    obj = VirtualObject("Door")
    ran: list[str] = []

    @obj.handler()
    async def hold(ctx: ObjectContext) -> str:
        _, opened = ctx.awakeable(str)
        door: str = await opened
        return door

    @obj.handler()
    async def knock(ctx: ObjectContext, who: str) -> str:
        ran.append(who)
        return who

    rt = LocalRuntime(obj)
    await rt.start("Door", "hold", key="d")
    first = await rt.start("Door", "knock", "first", key="d")
    second = await rt.start("Door", "knock", "second", key="d")
    await rt.cancel(first)
    assert first.attempts == 0
    with pytest.raises(TerminalError, match="invocation cancelled"):
        first.result()
    assert second.status == "pending"  # still behind the holder
    await rt.kill(rt.invocations["inv_local000001"])  # the holder
    assert second.result() == "second" and ran == ["second"]


async def test_the_order_saga_refunds_when_cancelled_during_its_hold() -> None:
    rt = LocalRuntime(orders)
    rt.register_completer(SleepEntry, _never_fires)
    inv = await rt.start("OrderFulfillment", "process", Order("o-9", "sku-1", 1, 10.0, hold_seconds=3600))
    assert inv.status == "suspended"
    await rt.cancel(inv)
    names = [call.name for call in inv.executions]
    assert names[-2:] == ["refund", "release"]
    with pytest.raises(TerminalError) as caught:
        inv.result()
    assert caught.value.status_code == 409


async def _never_fires(rt: LocalRuntime, inv: Any, index: int, entry: Any) -> None:
    return None  # the hold's timer does not fire in this test: the order is cancelled during it


@pytest.mark.parametrize("mode", MODES)
async def test_a_delayed_send_starts_when_the_fake_clock_reaches_it(mode: Any) -> None:
    started: list[tuple[str, int]] = []
    svc = Service("Reminders")
    rt = LocalRuntime(svc, mode=mode)

    @svc.handler()
    async def remind(ctx: Context, what: str) -> None:
        started.append((what, rt.clock.now_ms()))

    @svc.handler()
    async def schedule(ctx: Context) -> int:
        ctx.service_send(remind, "in a day", send_delay=timedelta(days=1))
        ctx.service_send(remind, "in an hour", send_delay=timedelta(hours=1))
        ctx.service_send(remind, "now")
        return rt.clock.now_ms()

    inv = await rt.start("Reminders", "schedule")
    sent_at = inv.result()
    assert [what for what, _ in started] == ["now", "in an hour", "in a day"]
    assert [at - sent_at for _, at in started] == [0, 3_600_000, 86_400_000]
    assert len(inv.sends) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_a_wait_completed_after_the_cancellation_does_not_change_the_replay(mode: Any) -> None:
    """The awakeable the handler was cancelled at is resolved while the compensation runs. Later
    attempts (every step in suspend mode) must still raise the cancellation at that wait, not go
    past it to "ship": the recorded cancellation hides the later completion until it is reached."""
    log: list[str] = []
    rt = LocalRuntime(saga(log), mode=mode)

    def resolve_during_refund(rt: LocalRuntime, inv: Invocation, index: int, entry: RunEntry) -> None:
        if entry.name == "refund":
            for waited in inv.journal.values():
                if isinstance(waited, AwakeableEntry) and not waited.completed:
                    rt.resolve_awakeable(waited.id, "approved")

    rt.register_commit_hook(RunEntry, resolve_during_refund)
    inv = await rt.start("Saga", "order")
    await rt.cancel(inv)
    assert inv.status == "completed", inv.outcome
    with pytest.raises(TerminalError, match="invocation cancelled"):
        inv.result()
    assert log == ["charge", "refund", "release"]
    awakeable = next(e for e in inv.journal.values() if isinstance(e, AwakeableEntry))
    assert awakeable.completed  # it did complete; the replays just did not act on it
