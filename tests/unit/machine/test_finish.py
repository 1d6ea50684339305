"""What completing an invocation implies (`journal.finish`, reached through `settle` and the
operator actions): the parent's call entry, the key lock and its inbox, timers, promise waiters
and the retention index."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.keyed import object_hash
from durable_core.keys import expiry_key
from durable_core.records import InvocationRecord
from handlers_sdk.protocol import (
    CallEntry,
    Completed,
    Failed,
    Failure,
    Outcome,
    PromiseGetEntry,
    SleepEntry,
    Suspended,
    child_invocation_id,
)
from tests.unit.machine.world import NOW, RETENTION_MS, World

RAW = msgspec.Raw


def _parent_with_child(world: World, suspend: bool) -> tuple[InvocationRecord, InvocationRecord]:
    """A parent that called Greeter/greet at index 1 (and suspended on it if `suspend`)."""
    parent = world.start()
    child_id = child_invocation_id(parent.id, 1)
    world.append(parent, 1, CallEntry(service="Greeter", handler="greet", invocation_id=child_id))
    if suspend:
        world.settle(parent, Suspended(waiting_on=[1]))
    return world.record(parent.id), world.record(child_id)


@pytest.mark.parametrize(
    ("outcome", "value", "failure"),
    [
        pytest.param(Completed(value=RAW(b'"r"')), b'"r"', None, id="completed"),
        pytest.param(
            Failed(failure=Failure(code=418, message="t")), b"null", Failure(code=418, message="t"), id="failed"
        ),
    ],
)
def test_a_child_completes_its_parents_call_entry_and_resumes_it(
    world: World, outcome: Outcome, value: bytes, failure: Failure | None
) -> None:
    """When a called child completes, the parent's call entry is completed with the child's
    result (or failure) and the next completion seq, and the parent, suspended on it, is resumed
    in the same transaction."""
    parent, child = _parent_with_child(world, suspend=True)
    assert parent.status == "suspended"
    done, effects, _ = world.settle(child, outcome)
    entry = world.entry(parent.id, 1)
    assert isinstance(entry, CallEntry) and entry.completed and entry.seq == 1
    assert (bytes(entry.value), entry.failure) == (value, failure)
    resumed = world.record(parent.id)
    assert (resumed.status, resumed.attempt, resumed.completion_seq) == ("running", parent.attempt + 1, 1)
    assert effects.launch == [resumed]
    assert effects.completed == [done]


def test_a_child_completing_while_its_parent_runs_only_completes_the_entry(world: World) -> None:
    """A running parent is not restarted: its entry is completed, its attempt stays current."""
    parent, child = _parent_with_child(world, suspend=False)
    _, effects, _ = world.settle(child, Completed(value=RAW(b"1")))
    entry = world.entry(parent.id, 1)
    assert isinstance(entry, CallEntry) and entry.completed
    after = world.record(parent.id)
    assert (after.status, after.attempt, after.token) == ("running", parent.attempt, parent.token)
    assert effects.launch == []


@pytest.mark.parametrize("parent_fate", ["completed", "purged"])
def test_a_child_outliving_its_parent_completes_quietly(world: World, parent_fate: str) -> None:
    """A parent may return without awaiting its call; the child, completing later, finds the
    parent completed (or purged) and completes without error, the parent's journal untouched."""
    parent, child = _parent_with_child(world, suspend=False)
    world.settle(parent, Completed())
    if parent_fate == "purged":
        world.act("purge", parent.id)
    journal = world.items(parent.id)
    done, effects, _ = world.settle(child, Completed(value=RAW(b"1")))
    assert done.status == "completed"
    assert effects.completed == [done]
    assert world.items(parent.id) == journal
    assert world.exists(parent.id) is (parent_fate == "completed")


def test_completion_releases_the_key_and_admits_the_next_in_arrival_order(world: World) -> None:
    """Exclusive invocations of one key run one at a time in arrival order: each completion hands
    the lock to the oldest pending one (started in the same transaction, queued for sending);
    the last one deletes the lock."""
    first, second, third = (world.start("Counter", "add", "k") for _ in range(3))
    assert [first.status, second.status, third.status] == ["running", "pending", "pending"]
    lock = object_hash("Counter", "k")

    _, effects, _ = world.settle(first, Completed())
    running = world.record(second.id)
    assert (running.status, running.attempt) == ("running", 1)
    assert effects.launch == [running]
    assert world.record(third.id).status == "pending"
    assert world.get_row("locks", lock) == second.id.encode()

    _, effects, _ = world.settle(running, Failed(failure=Failure(message="x")))
    assert [record.id for record in effects.launch] == [third.id]
    assert world.get_row("locks", lock) == third.id.encode()

    _, effects, _ = world.settle(world.record(third.id), Completed())
    assert effects.launch == []
    assert world.get_row("locks", lock) is None
    assert world.keys("inbox") == []


def test_a_pending_invocation_that_completed_in_the_inbox_is_skipped(world: World) -> None:
    """An invocation cancelled while it waited for the key is not admitted: the next one is."""
    holder, cancelled, waiting = (world.start("Counter", "add", "k") for _ in range(3))
    world.act("cancel", cancelled.id)
    assert world.record(cancelled.id).status == "completed"
    _, effects, _ = world.settle(holder, Completed())
    assert [record.id for record in effects.launch] == [waiting.id]
    assert world.record(waiting.id).status == "running"
    assert world.keys("inbox") == []


def test_a_shared_handler_never_touches_the_lock(world: World) -> None:
    """A shared handler completing does not release the exclusive holder's lock."""
    holder = world.start("Counter", "add", "k")
    shared = world.start("Counter", "get", "k")
    world.settle(shared, Completed())
    assert world.get_row("locks", object_hash("Counter", "k")) == holder.id.encode()


def test_completion_deletes_pending_timers_and_promise_waiters(world: World) -> None:
    """A completed invocation leaves no timer and no promise waiter behind, so nothing fires
    into a final journal; the retention index gets its expiry row."""
    run = world.start("Signup", "run", "alice")
    world.append(run, 0, SleepEntry(wake_at_ms=NOW + 1_000))
    world.append(run, 1, PromiseGetEntry(name="p"))
    world.append(run, 2, SleepEntry(wake_at_ms=NOW + 2_000))
    assert len(world.keys("timers")) == 2 and len(world.keys("promise_waiters")) == 1
    world.now = NOW + 5
    done, _, _ = world.settle(run, Completed())
    assert world.keys("timers") == []
    assert world.keys("promise_waiters") == []
    assert world.keys("expiry") == [expiry_key(NOW + 5 + RETENTION_MS, run.id)]
    assert done.expires_ms == NOW + 5 + RETENTION_MS
