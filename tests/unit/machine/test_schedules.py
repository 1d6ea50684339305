"""Schedules on the machine: arming, firing on time, catch-up after missed fires, overlap
policies, pause/resume/delete, code schedules kept by registration, and bad input."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.effects import Effects
from durable_core.errors import BadRequest, Conflict, NotFound
from durable_core.keys import split_timer_key, timer_key
from durable_core.records import DeploymentRecord, InvocationRecord, ServiceRecord
from durable_core.schedules import SCHEDULE_INDEX, CatchUp, ScheduleRecord, code_schedule_id, timer_id
from handlers_sdk.protocol import Completed
from tests.unit.machine.world import NOW, SERVICES, World

SECOND = 1_000


def _every(seconds: int = 1, **fields: object) -> ScheduleRecord:
    values: dict[str, object] = {"id": "tick", "service": "Greeter", "handler": "greet", "every_ms": seconds * SECOND}
    values.update(fields)
    return ScheduleRecord(**values)  # type: ignore[arg-type]


def _create(world: World, schedule: ScheduleRecord) -> tuple[ScheduleRecord, Effects]:
    return world.write(lambda txn: world.machine.create_schedule(txn, schedule, now=world.now))


def _stored(world: World, schedule_id: str = "tick") -> ScheduleRecord:
    return world.read(lambda txn: world.machine.schedule(txn, schedule_id))


def _schedule_timers(world: World) -> list[tuple[int, str]]:
    """(due, timer id) of every schedule timer stored."""
    timers = [split_timer_key(key) for key in world.keys("timers")]
    return [(due, name) for due, name, index in timers if index == SCHEDULE_INDEX]


def _fired(world: World) -> list[InvocationRecord]:
    """The invocations schedules started, oldest fire first."""
    records = world.read(lambda txn: world.machine.list_invocations(txn, limit=1000)[0])
    return sorted(
        (r for r in records if "x-durable-schedule" in r.headers), key=lambda r: r.headers["x-durable-fire-time"]
    )


def _run_until(world: World, until: int) -> None:
    """Advance the clock to `until` in 100 ms steps, firing what falls due on the way (a timer
    loop that keeps up)."""
    while world.now < until:
        world.now = min(until, world.now + 100)
        world.fire_due()


def test_a_new_schedule_arms_its_first_fire(world: World) -> None:
    created, effects = _create(world, _every(5))
    assert created.next_fire_ms == NOW + 5 * SECOND and created.anchor_ms == NOW and created.created_ms == NOW
    assert effects.wake_at == NOW + 5 * SECOND
    assert _schedule_timers(world) == [(NOW + 5 * SECOND, timer_id("tick"))]
    assert [s.id for s in world.read(world.machine.schedules)] == ["tick"]


def test_a_fire_on_time_starts_one_invocation_and_arms_the_next(world: World) -> None:
    """The fire's invocation has an id and an idempotency key derived from the schedule and the
    fire time, headers naming them, the schedule's input, and is started at once; the timer
    moves to the next fire time in the same transaction."""
    _create(world, _every(1, input=b'{"n":42}'))
    world.now = NOW + SECOND + 50
    effects, dropped = world.fire_due()
    assert dropped == []
    [fired] = _fired(world)
    assert fired.status == "running" and [r.id for r in effects.launch] == [fired.id]
    assert fired.idempotency_key == f"schedule:tick:{NOW + SECOND}"
    assert fired.headers == {"x-durable-schedule": "tick", "x-durable-fire-time": str(NOW + SECOND)}
    assert world.read(lambda txn: world.machine.input(txn, fired.id)) == b'{"n":42}'
    schedule = _stored(world)
    assert (schedule.next_fire_ms, schedule.last_fire_ms, schedule.fired) == (NOW + 2 * SECOND, NOW + SECOND, 1)
    assert schedule.last_invocation_id == fired.id
    assert _schedule_timers(world) == [(NOW + 2 * SECOND, timer_id("tick"))]
    assert effects.wake_at == NOW + 2 * SECOND


def test_a_keeping_up_loop_fires_each_time_once(world: World) -> None:
    _create(world, _every(1, overlap="allow"))
    _run_until(world, NOW + 10 * SECOND)
    fire_times = [int(r.headers["x-durable-fire-time"]) for r in _fired(world)]
    assert fire_times == [NOW + k * SECOND for k in range(1, 11)]
    assert _stored(world).fired == 10 and _stored(world).missed == 0


def test_a_fire_done_already_is_not_done_twice(world: World) -> None:
    """A fire time fired once (by this proxy before a crash, or by another proxy) makes no second
    invocation: the same schedule id and fire time give the same invocation id and idempotency
    key. Here the schedule is made again with the same phase and fires the same time again."""
    _create(world, _every(1, overlap="allow"))
    world.now = NOW + SECOND
    world.fire_due()
    [first] = _fired(world)
    world.write(lambda txn: world.machine.delete_schedule(txn, "tick"))
    world.now = NOW
    _create(world, _every(1, overlap="allow", anchor_ms=NOW))
    world.now = NOW + SECOND
    world.fire_due()
    assert [r.id for r in _fired(world)] == [first.id]
    assert _stored(world).fired == 0 and _stored(world).last_invocation_id == first.id


def test_within_the_grace_a_late_fire_is_on_time(world: World) -> None:
    _create(world, _every(60, catch_up="skip"))
    world.now = NOW + 60 * SECOND + 900  # 0.9 s late, the grace is 1 s
    world.fire_due()
    assert [int(r.headers["x-durable-fire-time"]) for r in _fired(world)] == [NOW + 60 * SECOND]


def test_missed_fires_with_catch_up_skip_run_none_and_arm_the_next_future_one(world: World) -> None:
    """The proxy was down from 1.5 s to 7.3 s: the fires at 2..7 s are missed; skip runs none of
    them, counts them, and arms 8 s."""
    _create(world, _every(1, catch_up="skip", overlap="allow"))
    _run_until(world, NOW + 1500)
    world.now = NOW + 7300
    world.fire_due()
    fire_times = [int(r.headers["x-durable-fire-time"]) for r in _fired(world)]
    assert fire_times == [NOW + SECOND]
    schedule = _stored(world)
    assert (schedule.missed, schedule.next_fire_ms, schedule.fired) == (6, NOW + 8 * SECOND, 1)
    _run_until(world, NOW + 9 * SECOND)
    assert [int(r.headers["x-durable-fire-time"]) for r in _fired(world)] == [NOW + k * SECOND for k in (1, 8, 9)]


def test_missed_fires_with_catch_up_once_run_one_for_all_of_them(world: World) -> None:
    """Down over the fires at 2..7 s: one invocation runs, at the latest missed fire time (7 s),
    saying it stands for 6 fires; the next is 8 s."""
    _create(world, _every(1, catch_up="once", overlap="allow"))
    _run_until(world, NOW + 1500)
    world.now = NOW + 7300
    world.fire_due()
    fired = _fired(world)
    assert [int(r.headers["x-durable-fire-time"]) for r in fired] == [NOW + SECOND, NOW + 7 * SECOND]
    assert fired[-1].headers["x-durable-missed-fires"] == "6"
    assert "x-durable-missed-fires" not in fired[0].headers
    schedule = _stored(world)
    assert (schedule.missed, schedule.next_fire_ms, schedule.fired) == (5, NOW + 8 * SECOND, 2)


def test_a_single_missed_cron_fire_is_run_once_or_skipped(world: World) -> None:
    """A daily cron fire missed by 10 minutes: `once` runs it (at its own fire time), `skip` does not."""
    midnight = 1_700_006_400_000  # 2023-11-15T00:00:00Z
    policies: tuple[tuple[CatchUp, int], ...] = (("once", 1), ("skip", 0))
    for catch_up, runs in policies:
        world = World()
        world.now = midnight - 60 * SECOND
        daily = ScheduleRecord(id="daily", service="Greeter", handler="greet", cron="0 0 * * *", catch_up=catch_up)
        _create(world, daily)
        assert _stored(world, "daily").next_fire_ms == midnight
        world.now = midnight + 600 * SECOND
        world.fire_due()
        assert [int(r.headers["x-durable-fire-time"]) for r in _fired(world)] == [midnight] * runs
        assert _stored(world, "daily").next_fire_ms == midnight + 86_400 * SECOND


@pytest.mark.parametrize(("overlap", "statuses"), [
    pytest.param("skip", ["running"], id="skip"),
    pytest.param("queue", ["running", "pending"], id="queue"),
    pytest.param("allow", ["running", "running"], id="allow"),
])  # fmt: skip
def test_a_fire_while_the_previous_one_runs_follows_the_overlap_policy(
    world: World, overlap: str, statuses: list[str]
) -> None:
    _create(world, _every(1, overlap=overlap))
    _run_until(world, NOW + 2 * SECOND)
    assert [r.status for r in _fired(world)] == statuses
    schedule = _stored(world)
    assert schedule.skipped == (1 if overlap == "skip" else 0)
    assert schedule.last_skipped_ms == (NOW + 2 * SECOND if overlap == "skip" else 0)


def test_queued_fires_run_one_after_the_other_in_fire_order(world: World) -> None:
    """With overlap queue, fires during a long run wait; each completion admits the next fire,
    in the same transaction, and only that one."""
    _create(world, _every(1, overlap="queue"))
    _run_until(world, NOW + 3 * SECOND)
    first, second, third = _fired(world)
    assert [first.status, second.status, third.status] == ["running", "pending", "pending"]
    _, effects, _ = world.settle(first, Completed())
    assert [r.id for r in effects.launch] == [second.id]
    assert [r.status for r in _fired(world)] == ["completed", "running", "pending"]
    _, effects, _ = world.settle(world.record(second.id), Completed())
    assert [r.id for r in effects.launch] == [third.id]
    assert world.keys("held") == []


def test_cancelling_a_queued_fire_lets_the_next_one_wait_for_the_running_one(world: World) -> None:
    _create(world, _every(1, overlap="queue"))
    _run_until(world, NOW + 2 * SECOND)
    running, queued = _fired(world)
    world.act("cancel", queued.id)
    assert world.record(queued.id).status == "completed"
    _, effects, _ = world.settle(running, Completed())
    assert effects.launch == []  # nothing was held behind the running one any more


def test_pause_removes_the_timer_and_resume_arms_the_next_fire_after_now(world: World) -> None:
    _create(world, _every(1))
    paused, _ = world.write(lambda txn: world.machine.pause_schedule(txn, "tick", True, now=world.now))
    assert paused.paused and paused.next_fire_ms == 0 and _schedule_timers(world) == []
    world.now = NOW + 5500
    world.fire_due()
    assert _fired(world) == []
    resumed, effects = world.write(lambda txn: world.machine.pause_schedule(txn, "tick", False, now=world.now))
    assert not resumed.paused and resumed.next_fire_ms == NOW + 6 * SECOND and effects.wake_at == NOW + 6 * SECOND
    assert _schedule_timers(world) == [(NOW + 6 * SECOND, timer_id("tick"))]
    again, _ = world.write(lambda txn: world.machine.pause_schedule(txn, "tick", False, now=world.now))
    assert again == resumed


def test_delete_removes_the_schedule_and_its_timer(world: World) -> None:
    _create(world, _every(1))
    deleted = world.write(lambda txn: world.machine.delete_schedule(txn, "tick"))
    assert deleted.id == "tick"
    assert world.read(world.machine.schedules) == [] and _schedule_timers(world) == []
    with pytest.raises(NotFound, match="schedule 'tick' not found"):
        world.write(lambda txn: world.machine.delete_schedule(txn, "tick"))
    world.now = NOW + 10 * SECOND
    world.fire_due()
    assert _fired(world) == []


def test_a_stale_timer_fires_nothing(world: World) -> None:
    """A timer whose schedule moved its next fire (a leftover row) is dropped without effect."""
    _create(world, _every(1))
    world.write(lambda txn: txn.put("timers", timer_key(NOW + 500, timer_id("tick"), SCHEDULE_INDEX), b""))
    world.now = NOW + 600
    effects, dropped = world.fire_due()
    assert (effects.launch, dropped, _fired(world)) == ([], [], [])
    assert _stored(world).next_fire_ms == NOW + SECOND


def test_a_fire_whose_target_is_gone_records_why_and_keeps_the_schedule(world: World) -> None:
    _create(world, _every(1))
    del world.services["Greeter"]
    world.now = NOW + SECOND
    _, dropped = world.fire_due()
    assert dropped == ["schedule tick: service 'Greeter' not found"]
    schedule = _stored(world)
    assert schedule.last_error == "service 'Greeter' not found" and schedule.next_fire_ms == NOW + 2 * SECOND


def test_a_schedule_of_an_object_handler_fires_on_its_key(world: World) -> None:
    _create(world, _every(1, id="count", service="Counter", handler="add", key="k1"))
    world.now = NOW + SECOND
    world.fire_due()
    [fired] = _fired(world)
    assert (fired.service, fired.key, fired.status) == ("Counter", "k1", "running")


def test_a_cron_schedule_in_a_time_zone(world: World) -> None:
    """09:00 in Europe/Berlin is 08:00 UTC in winter."""
    world.now = 1_700_000_000_000  # 2023-11-14T22:13:20Z
    created, _ = _create(
        world, ScheduleRecord(id="nine", service="Greeter", handler="greet", cron="0 9 * * *", timezone="Europe/Berlin")
    )
    assert created.next_fire_ms == 1_700_035_200_000  # 2023-11-15T08:00:00Z


@pytest.mark.parametrize(("fields", "error", "match"), [
    pytest.param({"every_ms": 0}, BadRequest, "either a cron expression", id="neither"),
    pytest.param({"cron": "* * * * *"}, BadRequest, "not both", id="both"),
    pytest.param({"every_ms": 0, "cron": "61 * * * *"}, BadRequest, "is not a cron expression", id="bad-cron"),
    pytest.param({"every_ms": 0, "cron": "* * * * *", "timezone": "Mars/Olympus"}, BadRequest, "unknown time zone",
                 id="bad-zone"),
    pytest.param({"every_ms": -5}, BadRequest, "at least 1 ms", id="negative-interval"),
    pytest.param({"id": ""}, BadRequest, "schedule id", id="empty-id"),
    pytest.param({"id": "a/b"}, BadRequest, "schedule id", id="slash-id"),
    pytest.param({"id": "x" * 201}, BadRequest, "schedule id", id="long-id"),
    pytest.param({"input": b"{nope"}, BadRequest, "must be JSON", id="bad-input"),
    pytest.param({"service": "Nope"}, NotFound, "service 'Nope' not found", id="unknown-service"),
    pytest.param({"handler": "nope"}, NotFound, "handler 'Greeter/nope' not found", id="unknown-handler"),
    pytest.param({"key": "k"}, BadRequest, "have no key", id="key-on-a-service"),
    pytest.param({"service": "Counter", "handler": "add"}, BadRequest, "needs a key", id="object-without-key"),
])  # fmt: skip
def test_bad_schedules_are_refused_and_change_nothing(
    world: World, fields: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _create(world, _every(1, **fields))
    assert world.keys("schedules") == [] and world.keys("timers") == []


def test_a_taken_id_is_a_conflict(world: World) -> None:
    _create(world, _every(1))
    with pytest.raises(Conflict, match="exists"):
        _create(world, _every(2))
    assert _stored(world).every_ms == SECOND


def _declare(world: World, declared: list[ScheduleRecord], services: list[str] | None = None) -> list[str]:
    records = [world.services[name] for name in services or ["Greeter"]]
    changed, _ = world.write(lambda txn: world.machine.sync_schedules(txn, records, declared, now=world.now))
    return changed


def _code(handler: str = "greet", cron: str = "*/5 * * * *") -> ScheduleRecord:
    return ScheduleRecord(
        id=code_schedule_id("Greeter", handler), service="Greeter", handler=handler, cron=cron, origin="code"
    )


def test_code_schedules_follow_the_registered_handlers(world: World) -> None:
    """A registration creates the schedules its handlers declare, keeps unchanged ones as they are
    (next fire, counters, pause), replaces changed ones, and deletes those no longer declared;
    schedules made through the API and other services' are left alone."""
    _create(world, _every(1))
    assert _declare(world, [_code("greet"), _code("shout")]) == ["code:Greeter:greet", "code:Greeter:shout"]
    world.write(lambda txn: world.machine.pause_schedule(txn, "code:Greeter:shout", True, now=world.now))
    world.now += 60 * SECOND
    assert _declare(world, [_code("greet"), _code("shout")]) == []
    assert _stored(world, "code:Greeter:shout").paused
    assert _declare(world, [_code("greet", cron="0 * * * *")]) == ["code:Greeter:shout", "code:Greeter:greet"]
    assert _stored(world, "code:Greeter:greet").cron == "0 * * * *"
    assert [s.id for s in world.read(world.machine.schedules)] == ["code:Greeter:greet", "tick"]


def test_removing_the_last_deployment_of_a_service_drops_its_code_schedules(world: World) -> None:
    deployment = DeploymentRecord(id="dp_a", uri="http://a", services=["Greeter"], created_ms=NOW)
    world.write(lambda txn: world.machine.register(txn, deployment, [SERVICES["Greeter"]]))
    _declare(world, [_code()])
    _create(world, _every(1))
    world.write(lambda txn: world.machine.remove_deployment(txn, "dp_a"))
    assert [s.id for s in world.read(world.machine.schedules)] == ["tick"]
    assert _schedule_timers(world) == [(NOW + SECOND, timer_id("tick"))]


def test_a_schedule_of_a_service_moved_elsewhere_keeps_firing(world: World) -> None:
    """The fire's invocation is pinned to whichever deployment serves the service when it fires."""
    _create(world, _every(1, overlap="allow"))
    world.services["Greeter"] = msgspec.structs.replace(SERVICES["Greeter"], deployment_id="dp_new")
    world.now = NOW + SECOND
    world.fire_due()
    assert [r.deployment_id for r in _fired(world)] == ["dp_new"]
    assert isinstance(world.services["Greeter"], ServiceRecord)
