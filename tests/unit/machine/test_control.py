"""Operator actions (`Machine.act`): cancel, kill, pause, resume, purge, their refusals, and the
cascade of cancel and kill to open children."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.errors import BadRequest, Conflict, NotFound
from durable_core.keyed import object_hash, read_promise
from durable_core.keys import idempotency_key
from durable_core.records import ACTIONS, STATUSES, InvocationRecord, Status
from handlers_sdk.protocol import (
    CallEntry,
    Completed,
    Failure,
    PromiseCompleteEntry,
    PromiseGetEntry,
    SendEntry,
    SetStateEntry,
    Suspended,
    child_invocation_id,
)
from tests.unit.machine.world import NOW, World

RAW = msgspec.Raw
OPEN_STATUSES: list[Status] = [s for s in STATUSES if s != "completed"]


def _completed(world: World) -> InvocationRecord:
    record = world.start()
    return world.settle(record, Completed(value=RAW(b"1")))[0]


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["existing", "unknown"])
def test_an_unknown_action_is_a_bad_request(world: World, target: str) -> None:
    """Anything but cancel, kill, pause, resume and purge is 400, and changes nothing."""
    record = world.start()
    with pytest.raises(BadRequest, match="unknown action"):
        world.act("restart", record.id if target == "existing" else "inv_nope")
    assert world.record(record.id) == record


@pytest.mark.parametrize("action", ACTIONS)
def test_an_action_on_an_unknown_invocation_is_not_found(world: World, action: str) -> None:
    """Every action on an invocation that does not exist is 404."""
    with pytest.raises(NotFound, match="not found"):
        world.act(action, "inv_nope")


@pytest.mark.parametrize("action", ["cancel", "kill", "pause", "resume"])
def test_an_action_on_a_completed_invocation_is_a_conflict(world: World, action: str) -> None:
    """Only purge applies to a completed invocation: the rest are 409 and change nothing."""
    done = _completed(world)
    with pytest.raises(Conflict):
        world.act(action, done.id)
    assert world.record(done.id) == done


# -- pause and resume -------------------------------------------------------------------------


@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_pause(world: World, status: Status) -> None:
    """Running, backing-off and suspended invocations can be paused (the token is cleared, which
    fences the in-flight attempt; the last failure stays, or the operator's pause is recorded);
    pending, scheduled and paused ones are 409."""
    last = Failure(code=503, message="earlier") if status == "backing-off" else None
    record = world.with_status(status, last_failure=last, next_retry_ms=NOW + 5)
    if status not in ("running", "backing-off", "suspended"):
        with pytest.raises(Conflict, match="can be paused"):
            world.act("pause", record.id)
        assert world.record(record.id) == record
        return
    paused, effects = world.act("pause", record.id)
    assert paused is not None and paused == world.record(record.id)
    assert (paused.status, paused.token, paused.next_retry_ms) == ("paused", "", 0)
    assert paused.last_failure == (last or Failure(code=0, message="paused by an operator"))
    assert effects.launch == [] and effects.retry == []


@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_resume(world: World, status: Status) -> None:
    """Paused and backing-off invocations resume with a new attempt (retry count reset) queued for
    sending; every other status is 409."""
    record = world.with_status(status, attempt=2, retry_count=3)
    if status not in ("paused", "backing-off"):
        with pytest.raises(Conflict, match="can be resumed"):
            world.act("resume", record.id)
        assert world.record(record.id) == record
        return
    resumed, effects = world.act("resume", record.id)
    assert resumed is not None
    assert (resumed.status, resumed.attempt, resumed.retry_count) == ("running", 3, 0)
    assert resumed.token and resumed.deployment_id == record.deployment_id
    assert effects.launch == [resumed]


@pytest.mark.parametrize(("deployment", "expected"), [("", "dp_a"), ("dp_new", "dp_new")])
def test_resume_can_move_to_another_deployment(world: World, deployment: str, expected: str) -> None:
    """Resume keeps the pinned deployment unless a new one is given."""
    record = world.with_status("paused")
    resumed, _ = world.act("resume", record.id, deployment_id=deployment)
    assert resumed is not None and resumed.deployment_id == expected


# -- cancel and kill --------------------------------------------------------------------------


@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_cancel(world: World, status: Status) -> None:
    """Cancel is cooperative: a started invocation gets a new attempt marked cancelled (so the
    handler raises and compensates) with its retries reset; one that never started (pending,
    scheduled) is completed at once as cancelled (409)."""
    record = world.with_status(status, attempt=1, retry_count=2)
    cancelled, effects = world.act("cancel", record.id)
    assert cancelled is not None and cancelled == world.record(record.id)
    if status in ("pending", "scheduled"):
        assert cancelled.status == "completed"
        assert cancelled.failure == Failure(code=409, message="invocation cancelled")
        assert effects.completed == [cancelled] and effects.launch == []
        return
    assert (cancelled.status, cancelled.cancelled, cancelled.attempt, cancelled.retry_count) == ("running", True, 2, 0)
    assert effects.launch == [cancelled] and effects.completed == []


@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_kill(world: World, status: Status) -> None:
    """Kill completes any invocation that has not completed, at once, with a 409 failure."""
    record = world.with_status(status)
    killed, effects = world.act("kill", record.id)
    assert killed is not None and killed == world.record(record.id)
    assert (killed.status, killed.token) == ("completed", "")
    assert killed.failure == Failure(code=409, message="invocation killed")
    assert effects.completed == [killed] and effects.launch == []
    assert world.keys("active") == []


def _call(world: World, parent: InvocationRecord, index: int, service: str = "Greeter", key: str = "") -> str:
    handler = "add" if service == "Counter" else "greet"
    child_id = child_invocation_id(parent.id, index)
    world.append(
        world.record(parent.id), index, CallEntry(service=service, handler=handler, key=key, invocation_id=child_id)
    )
    return child_id


def test_cancel_cascades_to_a_running_child(world: World) -> None:
    """Cancelling a parent cancels its open (running) child too: both get a cancelled attempt."""
    parent = world.start()
    child_id = _call(world, parent, 0)
    _, effects = world.act("cancel", parent.id)
    child, after = world.record(child_id), world.record(parent.id)
    assert (child.status, child.cancelled, child.attempt) == ("running", True, 2)
    assert (after.status, after.cancelled, after.attempt) == ("running", True, 2)
    assert {record.id: record for record in effects.launch} == {child_id: child, parent.id: after}


def test_cancelling_a_parent_completes_its_not_started_child_into_the_call_entry(world: World) -> None:
    """A child that had not started (queued behind its key) is completed as cancelled, which
    completes the parent's call entry with that failure; the parent then gets one cancelled
    attempt (the launch it was resumed with is superseded)."""
    world.start("Counter", "add", "k")
    parent = world.start()
    child_id = _call(world, parent, 0, "Counter", "k")
    world.settle(world.record(parent.id), Suspended(waiting_on=[0]))
    _, effects = world.act("cancel", parent.id)
    child = world.record(child_id)
    assert child.failure == Failure(code=409, message="invocation cancelled")
    entry = world.entry(parent.id, 0)
    assert isinstance(entry, CallEntry) and entry.completed and entry.failure == child.failure
    after = world.record(parent.id)
    assert (after.status, after.cancelled) == ("running", True)
    assert effects.launch == [after]
    assert effects.completed == [child]


def test_kill_cascades_down_the_call_tree(world: World) -> None:
    """Killing a parent kills its open child and grandchild; each completed call entry above them
    carries the 409 failure, and every one of them is reported finished. The callers were
    suspended on those calls: the attempts the completions would start are dropped, since the
    callers complete in the same transaction."""
    parent = world.start()
    child_id = _call(world, parent, 0)
    grandchild_id = _call(world, world.record(child_id), 0)
    world.settle(world.record(child_id), Suspended(waiting_on=[0]))
    world.settle(world.record(parent.id), Suspended(waiting_on=[0]))
    _, effects = world.act("kill", parent.id)
    killed = Failure(code=409, message="invocation killed")
    for invocation_id in (parent.id, child_id, grandchild_id):
        record = world.record(invocation_id)
        assert (record.status, record.failure) == ("completed", killed)
    for caller in (parent.id, child_id):
        entry = world.entry(caller, 0)
        assert isinstance(entry, CallEntry) and entry.completed and entry.failure == killed
    assert sorted(record.id for record in effects.completed) == sorted([parent.id, child_id, grandchild_id])
    assert effects.launch == []


def test_kill_leaves_completed_children_and_sends_alone(world: World) -> None:
    """Only open calls are killed: a child whose call already completed, and a child started by
    a one-way send, are untouched."""
    parent = world.start()
    done_id = _call(world, parent, 0)
    world.settle(world.record(done_id), Completed(value=RAW(b"1")))
    open_id = _call(world, parent, 1)
    sent_id = child_invocation_id(parent.id, 2)
    world.append(world.record(parent.id), 2, SendEntry(service="Greeter", handler="greet", invocation_id=sent_id))
    done_before, sent_before = world.record(done_id), world.record(sent_id)
    world.act("kill", parent.id)
    assert world.record(done_id) == done_before
    assert world.record(sent_id) == sent_before and sent_before.status == "running"
    assert world.record(open_id).failure == Failure(code=409, message="invocation killed")


# -- purge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_only_completed_invocations_can_be_purged(world: World, status: Status) -> None:
    """Purging an invocation that has not completed is 409 and removes nothing."""
    record = world.with_status(status)
    with pytest.raises(Conflict, match="only completed"):
        world.act("purge", record.id)
    assert world.record(record.id) == record


def test_purge_removes_every_row_of_an_invocation(world: World) -> None:
    """Purge removes the record, input, journal, idempotency key and retention row, and nothing
    of other invocations; the idempotency key is free again."""
    keep = _completed(world)
    record = world.start("Counter", "add", "k", idempotency="idem")
    world.append(record, 0, SetStateEntry(key="n", value=RAW(b"1")))
    world.settle(record, Completed())
    purged, effects = world.act("purge", record.id)
    assert purged is None and effects.completed == []
    assert not world.exists(record.id)
    assert world.items(record.id) == []
    assert world.get_row("inputs", record.id.encode()) is None
    assert world.get_row("idempotency", idempotency_key("Counter", "add", "k", "idem")) is None
    assert len(world.keys("expiry")) == 1 and world.exists(keep.id)
    # An object's state belongs to its key, not to one invocation: it stays, and so does its key
    # in `state_keys` (which is how the SQL `state` table still finds it).
    assert world.read(lambda txn: world.machine.state(txn, "Counter", "k")) == {"n": b"1"}
    assert world.read(lambda txn: world.machine.keys_with_state(txn, 10)) == ([("Counter", "k")], False)
    again, created, _ = world.submit("Counter", "add", "k", idempotency="idem")
    assert created and again.id != record.id


def test_purging_a_workflow_run_frees_its_key(world: World) -> None:
    """Purging a workflow run also removes its key's run marker, state, promises and waiters, so
    the key can run again; other keys keep theirs."""
    other = world.start("Signup", "run", "bob")
    world.append(other, 0, SetStateEntry(key="s", value=RAW(b"1")))
    run = world.start("Signup", "run", "alice")
    world.append(run, 0, SetStateEntry(key="s", value=RAW(b"1")))
    world.append(run, 1, PromiseCompleteEntry(name="done", resolution=RAW(b"1")))
    waiter = world.start("Signup", "status", "alice")
    world.append(waiter, 0, PromiseGetEntry(name="never"))
    world.settle(run, Completed())
    world.act("purge", run.id)
    assert world.read(lambda txn: world.machine.workflow_run(txn, "Signup", "alice")) is None
    assert world.read(lambda txn: world.machine.state(txn, "Signup", "alice")) == {}
    assert world.read(lambda txn: world.machine.keys_with_state(txn, 10)) == ([("Signup", "bob")], False)
    assert world.read(lambda txn: read_promise(txn, "Signup", "alice", "done")) is None
    assert world.keys("promise_waiters") == []
    assert world.read(lambda txn: world.machine.state(txn, "Signup", "bob")) == {"s": b"1"}
    assert world.get_row("workflows", object_hash("Signup", "bob")) == other.id.encode()
    rerun, created, _ = world.submit("Signup", "run", "alice")
    assert created and rerun.status == "running"
