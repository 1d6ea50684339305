"""Durable timers: `due_timers` (order, limit, next due) and `fire_timers` (sleeps, delayed starts,
moot timers)."""

from __future__ import annotations

import pytest

from durable_core.keys import START_INDEX, timer_key
from durable_core.machine import TimerFire
from handlers_sdk.protocol import SleepEntry, Suspended
from tests.unit.machine.world import NOW, World


def _sleeps(world: World, wake_offsets: list[int]) -> list[tuple[int, str, int]]:
    """One invocation per offset, each sleeping until NOW + offset at index 0; returns
    (due, id, index) of each timer."""
    timers = []
    for offset in wake_offsets:
        record = world.start()
        world.append(record, 0, SleepEntry(wake_at_ms=NOW + offset))
        timers.append((NOW + offset, record.id, 0))
    return timers


@pytest.mark.parametrize(
    ("now_offset", "limit", "due", "next_due"),
    [
        pytest.param(-1, 10, [], 0, id="nothing-due"),
        pytest.param(0, 10, [0], 100, id="due-exactly-now"),
        pytest.param(150, 10, [0, 100], 200, id="some-due"),
        pytest.param(10_000, 10, [0, 100, 200, 300], None, id="all-due-none-left"),
        pytest.param(10_000, 2, [0, 100], 200, id="limit-reports-the-next-one"),
    ],
)
def test_due_timers_are_listed_in_due_order(
    world: World, now_offset: int, limit: int, due: list[int], next_due: int | None
) -> None:
    """`due_timers` lists the timers due by now in due order (whatever order they were armed in),
    at most `limit` of them, and the due time of the first one it did not list (None if none)."""
    timers = sorted(_sleeps(world, [200, 0, 300, 100]))
    fires, upcoming = world.read(lambda txn: world.machine.due_timers(txn, NOW + now_offset, limit))
    by_offset = {t[0] - NOW: t for t in timers}
    assert [(f.due_ms, f.invocation_id, f.index) for f in fires] == [by_offset[o] for o in due]
    assert [f.key for f in fires] == [timer_key(*by_offset[o]) for o in due]
    assert upcoming == (None if next_due is None else NOW + next_due)


def test_a_fired_sleep_completes_once_and_resumes_its_waiter(world: World) -> None:
    """Firing a due sleep completes its entry (next seq), drops the timer from the record and the
    store, and resumes the invocation suspended on it; firing the same timer again does nothing."""
    record = world.start()
    world.append(record, 0, SleepEntry(name="nap", wake_at_ms=NOW + 100))
    world.settle(record, Suspended(waiting_on=[0]))
    world.now = NOW + 100
    fires, _ = world.read(lambda txn: world.machine.due_timers(txn, world.now, 10))
    effects, dropped = world.write(lambda txn: world.machine.fire_timers(txn, fires, now=world.now))
    assert dropped == []
    entry = world.entry(record.id, 0)
    assert entry == SleepEntry(name="nap", wake_at_ms=NOW + 100, completed=True, seq=1)
    resumed = world.record(record.id)
    assert (resumed.status, resumed.attempt, resumed.timers, resumed.completion_seq) == (
        "running", record.attempt + 1, [], 1,
    )  # fmt: skip
    assert effects.launch == [resumed]
    assert world.keys("timers") == []
    again, dropped = world.write(lambda txn: world.machine.fire_timers(txn, fires, now=world.now))
    assert (again.launch, dropped) == ([], [])
    assert world.entry(record.id, 0) == entry
    assert world.record(record.id) == resumed


def test_a_sleep_a_suspended_invocation_does_not_wait_on_leaves_it_suspended(world: World) -> None:
    """A suspension names what resumes it: another of its sleeps firing is journaled but starts
    no attempt."""
    record = world.start()
    world.append(record, 0, SleepEntry(wake_at_ms=NOW))
    world.append(record, 1, SleepEntry(wake_at_ms=NOW + 60_000))
    suspended, _, _ = world.settle(record, Suspended(waiting_on=[1]))
    effects, _ = world.fire_due()
    assert effects.launch == []
    entry = world.entry(record.id, 0)
    assert isinstance(entry, SleepEntry) and entry.completed
    after = world.record(record.id)
    assert (after.status, after.attempt, after.waiting_on) == ("suspended", suspended.attempt, [1])
    assert after.timers == [(NOW + 60_000, 1)]


def test_a_sleep_firing_while_the_attempt_runs_does_not_restart_it(world: World) -> None:
    """A running invocation's sleep completes in the journal; its attempt stays current."""
    record = world.start()
    world.append(record, 0, SleepEntry(wake_at_ms=NOW))
    effects, _ = world.fire_due()
    assert effects.launch == []
    after = world.record(record.id)
    assert (after.status, after.attempt, after.token) == ("running", record.attempt, record.token)


@pytest.mark.parametrize(
    ("service", "handler", "key", "held", "status"),
    [
        pytest.param("Greeter", "greet", "", False, "running", id="service"),
        pytest.param("Counter", "add", "k", False, "running", id="free-key"),
        pytest.param("Counter", "add", "k", True, "pending", id="held-key-queues"),
    ],
)
def test_a_start_timer_starts_its_scheduled_invocation(
    world: World, service: str, handler: str, key: str, held: bool, status: str
) -> None:
    """The start timer of a delayed invocation admits it when due: it runs (queued for sending),
    or waits behind its key's holder."""
    scheduled = world.start(service, handler, key, delay_ms=1_000)
    if held:
        world.start(service, handler, key)
    effects, dropped = world.fire_due(NOW + 1_000)
    started = world.record(scheduled.id)
    assert (started.status, dropped) == (status, [])
    assert effects.launch == ([started] if status == "running" else [])
    assert world.keys("timers") == []


def test_a_start_timer_of_an_invocation_no_longer_scheduled_only_goes_away(world: World) -> None:
    """A cancelled (completed) scheduled invocation's start timer is deleted when due and starts
    nothing."""
    scheduled = world.start(delay_ms=1_000)
    world.act("cancel", scheduled.id)
    done = world.record(scheduled.id)
    effects, dropped = world.fire_due(NOW + 1_000)
    assert (effects.launch, dropped) == ([], [])
    assert world.record(scheduled.id) == done
    assert world.keys("timers") == []


def test_a_killed_invocations_timer_is_gone_so_a_stale_fire_is_a_no_op(world: World) -> None:
    """Killing an invocation deletes its timers; a fire planned before the kill finds no row and
    leaves the final journal alone."""
    record = world.start()
    world.append(record, 0, SleepEntry(wake_at_ms=NOW))
    fires, _ = world.read(lambda txn: world.machine.due_timers(txn, NOW, 10))
    world.act("kill", record.id)
    journal = world.items(record.id)
    effects, dropped = world.write(lambda txn: world.machine.fire_timers(txn, fires, now=NOW))
    assert (effects.launch, effects.completed, dropped) == ([], [], [])
    assert world.items(record.id) == journal


def test_a_moot_timer_of_a_purged_invocation_is_reported_as_dropped(world: World) -> None:
    """A timer row whose invocation is gone (an orphan, e.g. left by an older version) is deleted
    and reported as dropped rather than failing the batch."""
    record = world.start()
    world.act("kill", record.id)
    world.act("purge", record.id)
    orphan = timer_key(NOW, record.id, 0)
    world.write(lambda txn: txn.put("timers", orphan, b""))
    fire = TimerFire(orphan, NOW, record.id, 0)
    effects, dropped = world.write(lambda txn: world.machine.fire_timers(txn, [fire], now=NOW))
    assert len(dropped) == 1 and f"{record.id}/0" in dropped[0] and "dropped" in dropped[0]
    assert effects.launch == []
    assert world.keys("timers") == []


def test_a_start_index_timer_of_a_purged_invocation_goes_away_silently(world: World) -> None:
    """A start timer whose invocation is gone is deleted without a report."""
    world.write(lambda txn: txn.put("timers", timer_key(NOW, "inv_gone", START_INDEX), b""))
    effects, dropped = world.fire_due()
    assert (effects.launch, dropped) == ([], [])
    assert world.keys("timers") == []
