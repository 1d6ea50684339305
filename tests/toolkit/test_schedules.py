"""LocalRuntime's schedules, fired by the proxy's own rules: code schedules created at
construction as registration creates them, run-time ones as the admin API creates them, fired
on the fake clock by `run_until` / `advance` (each fire an ordinary invocation), never by
running until idle."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from handlers_sdk import Context, Service
from handlers_sdk.clock import FakeClock
from handlers_sdk.protocol import ScheduleInfo
from handlers_sdk.testing import LocalRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]
#: A start on a minute boundary, so a cron's fires are whole minutes after it.
T0 = 1_800_000_000_000
MINUTE = 60_000


@pytest.mark.parametrize("mode", MODES)
async def test_a_code_schedule_fires_once_per_minute_with_the_fire_time_idempotency_key(mode: Any) -> None:
    svc, clock = Service("Ticker"), FakeClock(T0)
    runs: list[int] = []

    @svc.handler(schedule="* * * * *")
    async def tick(ctx: Context) -> None:
        runs.append(clock.now_ms())

    rt = LocalRuntime(svc, mode=mode, clock=clock)
    [schedule] = rt.schedules()
    assert (schedule.id, schedule.origin, schedule.next_fire_ms) == ("code:Ticker:tick", "code", T0 + MINUTE)

    await rt.run_until(T0 + 3 * MINUTE + 5_000)

    fire_times = [T0 + n * MINUTE for n in (1, 2, 3)]
    assert runs == fire_times
    assert rt.clock.now_ms() == T0 + 3 * MINUTE + 5_000
    invocations = list(rt.invocations.values())
    assert [inv.status for inv in invocations] == ["completed"] * 3
    assert [inv.record.idempotency_key for inv in invocations] == [
        f"schedule:code:Ticker:tick:{at}" for at in fire_times
    ]
    assert [inv.record.headers["x-durable-fire-time"] for inv in invocations] == [str(at) for at in fire_times]
    after = rt.schedule("code:Ticker:tick")
    assert (after.fired, after.last_fire_ms, after.next_fire_ms) == (3, fire_times[-1], T0 + 4 * MINUTE)


async def test_running_until_idle_ignores_schedules() -> None:
    svc = Service("Ticker")
    runs: list[int] = []

    @svc.handler(schedule="* * * * *")
    async def tick(ctx: Context) -> None:
        runs.append(1)

    @svc.handler()
    async def nap(ctx: Context) -> str:
        await ctx.sleep(dt.timedelta(seconds=10))
        return "rested"

    rt = LocalRuntime(svc, clock=FakeClock(T0))
    assert await rt.call("Ticker", "nap") == "rested"  # ends, though the schedule re-arms forever
    assert runs == []
    assert rt.clock.now_ms() == T0 + 10_000


async def test_a_run_time_interval_schedule_fires_with_its_input_and_pause_stops_it() -> None:
    svc, clock = Service("Reports"), FakeClock(T0)
    runs: list[tuple[int, str]] = []

    @svc.handler()
    async def report(ctx: Context, name: str) -> None:
        runs.append((clock.now_ms(), name))

    rt = LocalRuntime(svc, clock=clock)

    created = rt.create_schedule("Reports", "report", "daily", id="reports", every=dt.timedelta(seconds=30))
    assert (created.every_ms, created.next_fire_ms, created.origin) == (30_000, T0 + 30_000, "api")

    await rt.advance(100)  # fires at 30, 60 and 90 s
    assert runs == [(T0 + n * 30_000, "daily") for n in (1, 2, 3)]

    paused = rt.pause_schedule("reports")
    assert (paused.paused, paused.next_fire_ms) == (True, 0)
    await rt.advance(120)
    assert len(runs) == 3

    resumed = rt.resume_schedule("reports")
    assert resumed.next_fire_ms == T0 + 240_000  # the next fire after now, none caught up
    await rt.run_until(dt.datetime.fromtimestamp((T0 + 240_000) / 1000, tz=dt.UTC))
    assert runs[-1] == (T0 + 240_000, "daily")
    assert rt.schedule("reports").fired == 4

    rt.delete_schedule("reports")
    assert rt.schedules() == []
    with pytest.raises(KeyError):
        rt.pause_schedule("reports")


async def test_bad_run_time_schedules_are_refused_as_the_admin_api_refuses_them() -> None:
    svc = Service("Reports")

    @svc.handler()
    async def report(ctx: Context) -> None:
        pass

    rt = LocalRuntime(svc, clock=FakeClock(T0))
    with pytest.raises(KeyError):
        rt.create_schedule("Reports", "nope", every=1)
    with pytest.raises(ValueError, match="cron expression"):
        rt.create_schedule("Reports", "report", cron="every tuesday")
    with pytest.raises(ValueError, match="1 ms"):
        rt.create_schedule("Reports", "report", every=0)
    rt.create_schedule("Reports", "report", id="r", every=1)
    with pytest.raises(ValueError, match="exists"):
        rt.create_schedule("Reports", "report", id="r", every=1)
    with pytest.raises(ValueError, match="before"):
        await rt.run_until(T0 - 1)


@pytest.mark.parametrize("mode", MODES)
async def test_overlap_skip_drops_the_fires_while_the_previous_one_still_runs(mode: Any) -> None:
    svc, clock = Service("Slow"), FakeClock(T0)
    started: list[str] = []

    @svc.handler(schedule=ScheduleInfo(every_ms=MINUTE, overlap="skip"))
    async def crawl(ctx: Context) -> None:
        started.append(await ctx.run("start", lambda: str(clock.now_ms())))
        await ctx.sleep(dt.timedelta(seconds=90))  # longer than the interval

    rt = LocalRuntime(svc, mode=mode, clock=clock)
    await rt.run_until(T0 + 3 * MINUTE + 1_000)

    # 1 min: starts, sleeps to 2.5 min; 2 min: skipped; 3 min: starts, sleeps to 4.5 min.
    assert sorted(set(started)) == [str(T0 + MINUTE), str(T0 + 3 * MINUTE)]
    schedule = rt.schedule("code:Slow:crawl")
    assert (schedule.fired, schedule.skipped, schedule.last_skipped_ms) == (2, 1, T0 + 2 * MINUTE)
    first, second = rt.invocations.values()
    assert (first.status, second.status) == ("completed", "suspended")  # the second sleeps past the end
