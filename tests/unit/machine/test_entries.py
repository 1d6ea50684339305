"""What journaling each kind of entry does besides storing it: timers, child invocations, state
writes, awakeables and durable promises, with every refusal."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.errors import BadRequest, NotFound
from durable_core.keyed import object_hash, promise_key, read_promise
from durable_core.keys import START_INDEX, journal_key, split_timer_key, timer_key
from durable_core.records import InvocationRecord, PromiseRecord
from durable_core.txn import Txn
from handlers_sdk.protocol import (
    NULL,
    AwakeableEntry,
    CallEntry,
    ClearAllStateEntry,
    ClearStateEntry,
    Entry,
    Failure,
    PromiseCompleteEntry,
    PromiseGetEntry,
    PromisePeekEntry,
    SendEntry,
    SetStateEntry,
    SleepEntry,
    Suspended,
    awakeable_id,
    child_invocation_id,
)
from tests.unit.machine.world import NOW, World

RAW = msgspec.Raw


def _keys_with_state(world: World) -> list[tuple[str, str]]:
    keys, more = world.read(lambda txn: world.machine.keys_with_state(txn, 100))
    assert not more
    return sorted(keys)


def _state(world: World, service: str, key: str) -> dict[str, bytes]:
    return world.read(lambda txn: world.machine.state(txn, service, key))


def _promise(world: World, name: str, key: str = "alice") -> PromiseRecord | None:
    return world.read(lambda txn: read_promise(txn, "Signup", key, name))


# -- sleep ------------------------------------------------------------------------------------


def test_a_sleep_arms_a_timer(world: World) -> None:
    """A sleep entry is stored open (whatever the SDK sent), a timer row at its wake time is
    written, the record remembers it, and the timer loop is told to wake then."""
    record = world.start()
    effects, done = world.append(record, 3, SleepEntry(name="nap", wake_at_ms=NOW + 1_000, completed=True, seq=9))
    assert done is None
    assert world.entry(record.id, 3) == SleepEntry(name="nap", wake_at_ms=NOW + 1_000)
    assert world.keys("timers") == [timer_key(NOW + 1_000, record.id, 3)]
    assert world.record(record.id).timers == [(NOW + 1_000, 3)]
    assert effects.wake_at == NOW + 1_000
    assert effects.launch == []


# -- calls and sends --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "handler", "key", "child_key", "keyed"),
    [
        pytest.param("Greeter", "greet", "", "", False, id="service"),
        pytest.param("Greeter", "greet", "ignored", "", False, id="service-drops-key"),
        pytest.param("Counter", "add", "k", "k", True, id="object"),
        pytest.param("Signup", "run", "bob", "bob", True, id="workflow-run"),
    ],
)
def test_a_call_creates_its_child(
    world: World, service: str, handler: str, key: str, child_key: str, keyed: bool
) -> None:
    """A call entry creates the child under `child_invocation_id(parent, index)`, linked to the
    parent's entry, started and queued for sending, with the call's input; the entry stays open."""
    parent = world.start()
    child_id = child_invocation_id(parent.id, 2)
    call = CallEntry(service=service, handler=handler, key=key, input=RAW(b'{"x":1}'), invocation_id=child_id)
    effects, done = world.append(parent, 2, call)
    assert done is None
    child = world.record(child_id)
    assert (child.service, child.handler, child.key, child.keyed) == (service, handler, child_key, keyed)
    assert (child.parent_id, child.parent_index, child.status, child.attempt) == (parent.id, 2, "running", 1)
    assert effects.launch == [child]
    assert world.read(lambda txn: world.machine.input(txn, child_id)) == b'{"x":1}'
    stored = world.entry(parent.id, 2)
    assert isinstance(stored, CallEntry) and not stored.completed
    if service == "Signup":
        assert world.read(lambda txn: world.machine.workflow_run(txn, "Signup", "bob")) == child_id


def test_a_called_exclusive_handler_waits_for_its_key(world: World) -> None:
    """A call to an exclusive handler whose key is held creates the child pending, not started."""
    world.start("Counter", "add", "k")
    parent = world.start()
    child_id = child_invocation_id(parent.id, 0)
    effects, _ = world.append(parent, 0, CallEntry(service="Counter", handler="add", key="k", invocation_id=child_id))
    assert world.record(child_id).status == "pending"
    assert effects.launch == []


@pytest.mark.parametrize("kind", ["call", "send"])
def test_a_child_id_other_than_child_invocation_id_is_a_bad_request(world: World, kind: str) -> None:
    """The child's id must be `child_invocation_id(parent, index)`: anything else is 400, and
    neither the entry nor a child is written."""
    parent = world.start()
    wrong = child_invocation_id(parent.id, 1)
    entry: Entry = (
        CallEntry(service="Greeter", handler="greet", invocation_id=wrong)
        if kind == "call"
        else SendEntry(service="Greeter", handler="greet", invocation_id=wrong)
    )
    with pytest.raises(BadRequest, match="child_invocation_id"):
        world.append(parent, 0, entry)
    assert world.items(parent.id) == []
    assert not world.exists(wrong)


@pytest.mark.parametrize(
    ("service", "handler", "key", "code"),
    [
        pytest.param("Nope", "greet", "", 404, id="unknown-service"),
        pytest.param("Greeter", "nope", "", 404, id="unknown-handler"),
        pytest.param("Counter", "add", "", 400, id="keyed-without-key"),
        pytest.param("Signup", "run", "alice", 409, id="workflow-already-run"),
    ],
)
def test_a_call_that_cannot_start_completes_at_once_with_a_failure(
    world: World, service: str, handler: str, key: str, code: int
) -> None:
    """A call to an unknown target, to a keyed target without a key, or to a workflow key that was
    already run is journaled completed with the failure (a terminal error in the caller), takes the
    next completion seq, creates no child and is answered on the spot."""
    world.start("Signup", "run", "alice")
    parent = world.start()
    child_id = child_invocation_id(parent.id, 0)
    effects, done = world.append(
        parent, 0, CallEntry(service=service, handler=handler, key=key, invocation_id=child_id)
    )
    stored = world.entry(parent.id, 0)
    assert isinstance(stored, CallEntry) and stored.completed
    assert stored.failure is not None and stored.failure.code == code
    assert stored.seq == 1
    assert world.record(parent.id).completion_seq == 1
    assert done == stored
    assert not world.exists(child_id)
    assert effects.launch == []


def test_a_send_starts_an_unlinked_child(world: World) -> None:
    """A send creates and starts its child with no link back to the sender (nobody waits)."""
    parent = world.start()
    child_id = child_invocation_id(parent.id, 0)
    send = SendEntry(service="Counter", handler="add", key="k", input=RAW(b"5"), invocation_id=child_id)
    effects, done = world.append(parent, 0, send)
    child = world.record(child_id)
    assert (child.status, child.parent_id, child.parent_index, child.key) == ("running", "", 0, "k")
    assert effects.launch == [child]
    assert done is None
    assert world.entry(parent.id, 0) == send


def test_a_delayed_send_schedules_its_child(world: World) -> None:
    """A send with a delay creates the child scheduled, with a start timer, and wakes the timers."""
    parent = world.start()
    child_id = child_invocation_id(parent.id, 0)
    effects, _ = world.append(
        parent, 0, SendEntry(service="Greeter", handler="greet", invocation_id=child_id, delay_ms=2_500)
    )
    child = world.record(child_id)
    assert (child.status, child.scheduled_at_ms) == ("scheduled", NOW + 2_500)
    assert [split_timer_key(key) for key in world.keys("timers")] == [(NOW + 2_500, child_id, START_INDEX)]
    assert effects.wake_at == NOW + 2_500
    assert effects.launch == []


@pytest.mark.parametrize(("service", "handler"), [("Nope", "greet"), ("Greeter", "nope")])
def test_a_send_to_an_unknown_target_is_not_found(world: World, service: str, handler: str) -> None:
    """A send to an unknown service or handler is refused with 404: no entry, no child."""
    parent = world.start()
    child_id = child_invocation_id(parent.id, 0)
    with pytest.raises(NotFound):
        world.append(parent, 0, SendEntry(service=service, handler=handler, invocation_id=child_id))
    assert world.items(parent.id) == []
    assert not world.exists(child_id)


def test_a_send_to_a_keyed_target_without_a_key_is_a_bad_request(world: World) -> None:
    """A send to a virtual object without a key is a 400, as the same call is, not a 404."""
    parent = world.start()
    child_id = child_invocation_id(parent.id, 0)
    with pytest.raises(BadRequest):
        world.append(parent, 0, SendEntry(service="Counter", handler="add", invocation_id=child_id))


def test_a_send_to_a_workflow_key_already_run_is_a_no_op(world: World) -> None:
    """A one-way send of a workflow run whose key has run is journaled and starts nothing."""
    run = world.start("Signup", "run", "alice")
    parent = world.start()
    child_id = child_invocation_id(parent.id, 0)
    effects, _ = world.append(
        parent, 0, SendEntry(service="Signup", handler="run", key="alice", invocation_id=child_id)
    )
    assert not world.exists(child_id)
    assert effects.launch == []
    assert isinstance(world.entry(parent.id, 0), SendEntry)
    assert world.read(lambda txn: world.machine.workflow_run(txn, "Signup", "alice")) == run.id


# -- awakeables -------------------------------------------------------------------------------


def test_an_awakeable_is_journaled_open(world: World) -> None:
    """An awakeable entry with the id `awakeable_id(invocation, index)` is stored open."""
    record = world.start()
    sent = AwakeableEntry(id=awakeable_id(record.id, 1), completed=True, value=RAW(b"1"), seq=4)
    _, done = world.append(record, 1, sent)
    assert done is None
    assert world.entry(record.id, 1) == AwakeableEntry(id=awakeable_id(record.id, 1))


@pytest.mark.parametrize("wrong", ["other-index", "other-invocation", "garbage"])
def test_an_awakeable_with_another_id_is_a_bad_request(world: World, wrong: str) -> None:
    """Any awakeable id but the derived one is 400, and nothing is journaled."""
    record = world.start()
    ids = {
        "other-index": awakeable_id(record.id, 2),
        "other-invocation": awakeable_id("inv_someoneelse", 1),
        "garbage": "awk_x",
    }
    with pytest.raises(BadRequest, match="awakeable_id"):
        world.append(record, 1, AwakeableEntry(id=ids[wrong]))
    assert world.items(record.id) == []


# -- state ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("service", "handler", "key"), [("Counter", "add", "k"), ("Signup", "run", "alice")])
def test_state_writes_are_applied_with_their_entry(world: World, service: str, handler: str, key: str) -> None:
    """Set, clear and clear-all change the key's state in the transaction that journals them, and
    only that key's state."""
    world.write(lambda txn: world.machine.replace_state(txn, service, "neighbour", {"n": b"0"}))
    record = world.start(service, handler, key)
    world.append(record, 0, SetStateEntry(key="a", value=RAW(b"1")))
    world.append(record, 1, SetStateEntry(key="b", value=RAW(b'"two"')))
    world.append(record, 2, SetStateEntry(key="a", value=RAW(b"3")))
    assert _state(world, service, key) == {"a": b"3", "b": b'"two"'}
    world.append(record, 3, ClearStateEntry(key="a"))
    assert _state(world, service, key) == {"b": b'"two"'}
    world.append(record, 4, SetStateEntry(key="c", value=RAW(b"null")))
    world.append(record, 5, ClearAllStateEntry())
    assert _state(world, service, key) == {}
    assert _state(world, service, "neighbour") == {"n": b"0"}
    assert [item.index for item in world.items(record.id)] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(("service", "handler", "key"), [("Counter", "add", "k"), ("Signup", "run", "alice")])
def test_state_keys_list_every_key_with_state(world: World, service: str, handler: str, key: str) -> None:
    """``state_keys`` holds the plain (service, key) of a key from its first state write until
    its state is empty again: clear-all, or a clear of its last entry (not of another one)."""
    record = world.start(service, handler, key)
    assert _keys_with_state(world) == []
    world.append(record, 0, SetStateEntry(key="a", value=RAW(b"1")))
    world.append(record, 1, SetStateEntry(key="b", value=RAW(b"2")))
    assert _keys_with_state(world) == [(service, key)]
    assert world.keys("state_keys") == [object_hash(service, key)]
    world.append(record, 2, ClearStateEntry(key="a"))
    assert _keys_with_state(world) == [(service, key)]
    world.append(record, 3, ClearStateEntry(key="b"))
    assert _keys_with_state(world) == []
    world.append(record, 4, SetStateEntry(key="c", value=RAW(b"3")))
    assert _keys_with_state(world) == [(service, key)]
    world.append(record, 5, ClearAllStateEntry())
    assert _keys_with_state(world) == [] and world.keys("state_keys") == []


def test_state_keys_follow_the_admin_edit(world: World) -> None:
    """Replacing a key's state lists it when the new state has an entry and unlists it when not;
    a key listed once is listed once however often it is written."""
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "k/with\x00odd", {"n": b"1"}))
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "k/with\x00odd", {"n": b"2", "m": b"3"}))
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "other", {"n": b"1"}))
    assert _keys_with_state(world) == [("Counter", "k/with\x00odd"), ("Counter", "other")]
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "other", {}))
    assert _keys_with_state(world) == [("Counter", "k/with\x00odd")]


def test_keys_with_state_stops_at_the_limit(world: World) -> None:
    """At most `limit` keys, and whether there were more."""

    def fill(txn: Txn) -> None:
        for n in range(3):
            world.machine.replace_state(txn, "Counter", f"k{n}", {"n": b"1"})

    world.write(fill)
    keys, more = world.read(lambda txn: world.machine.keys_with_state(txn, 2))
    assert len(keys) == 2 and more
    keys, more = world.read(lambda txn: world.machine.keys_with_state(txn, 3))
    assert len(keys) == 3 and not more


@pytest.mark.parametrize(
    ("service", "handler", "key"),
    [("Greeter", "greet", ""), ("Counter", "get", "k"), ("Signup", "status", "alice")],
)
@pytest.mark.parametrize(
    "entry",
    [SetStateEntry(key="a", value=RAW(b"1")), ClearStateEntry(key="a"), ClearAllStateEntry()],
    ids=["set", "clear", "clear-all"],
)
def test_state_writes_are_refused_outside_exclusive_and_workflow_handlers(
    world: World, service: str, handler: str, key: str, entry: Entry
) -> None:
    """Services and shared handlers cannot write state: 400, no entry, the state unchanged."""
    world.write(lambda txn: world.machine.replace_state(txn, service, key, {"a": b"0"}))
    record = world.start(service, handler, key)
    with pytest.raises(BadRequest, match="cannot write state"):
        world.append(record, 0, entry)
    assert world.items(record.id) == []
    assert _state(world, service, key) == {"a": b"0"}


# -- durable promises -------------------------------------------------------------------------


@pytest.mark.parametrize(("service", "handler", "key"), [("Greeter", "greet", ""), ("Counter", "add", "k")])
@pytest.mark.parametrize(
    "entry",
    [PromiseGetEntry(name="p"), PromisePeekEntry(name="p"), PromiseCompleteEntry(name="p", resolution=RAW(b"1"))],
    ids=["get", "peek", "complete"],
)
def test_promises_exist_only_in_workflows(world: World, service: str, handler: str, key: str, entry: Entry) -> None:
    """A promise operation from a service or an object is 400 and journals nothing."""
    record = world.start(service, handler, key)
    with pytest.raises(BadRequest, match="only in workflows"):
        world.append(record, 0, entry)
    assert world.items(record.id) == []


def _resolve(world: World, name: str, value: bytes = b'"v"', failure: Failure | None = None) -> InvocationRecord:
    """Complete promise `name` of Signup/alice from a shared handler; returns that invocation."""
    other = world.start("Signup", "status", "alice")
    world.append(other, 0, PromiseCompleteEntry(name=name, resolution=RAW(value), rejection=failure))
    return other


def test_a_promise_get_of_an_unresolved_promise_waits(world: World) -> None:
    """Get on an unresolved promise stays open, writes a waiter row and records the wait."""
    run = world.start("Signup", "run", "alice")
    _, done = world.append(run, 1, PromiseGetEntry(name="p", completed=True, seq=3))
    assert done is None
    assert world.entry(run.id, 1) == PromiseGetEntry(name="p")
    assert world.keys("promise_waiters") == [promise_key("Signup", "alice", "p") + journal_key(run.id, 1)]
    assert world.record(run.id).promise_waits == [("p", 1)]


@pytest.mark.parametrize(
    ("value", "failure"),
    [pytest.param(b'"v"', None, id="resolved"), pytest.param(b"null", Failure(code=400, message="no"), id="rejected")],
)
def test_a_promise_get_of_a_completed_promise_completes_at_once(
    world: World, value: bytes, failure: Failure | None
) -> None:
    """Get on a resolved (or rejected) promise is journaled completed with its value (or failure)."""
    _resolve(world, "p", value, failure)
    run = world.start("Signup", "run", "alice")
    _, done = world.append(run, 0, PromiseGetEntry(name="p"))
    stored = world.entry(run.id, 0)
    assert isinstance(stored, PromiseGetEntry) and stored.completed and stored.seq == 1
    assert stored.failure == failure
    assert bytes(stored.value) == (b"null" if failure else value)
    assert done == stored
    assert world.keys("promise_waiters") == []


@pytest.mark.parametrize("resolved", [False, True])
def test_a_promise_peek_completes_at_once(world: World, resolved: bool) -> None:
    """Peek never waits: it is completed on the spot, `found` telling whether a value exists."""
    if resolved:
        _resolve(world, "p", b"42")
    run = world.start("Signup", "run", "alice")
    _, done = world.append(run, 0, PromisePeekEntry(name="p"))
    stored = world.entry(run.id, 0)
    assert isinstance(stored, PromisePeekEntry) and stored.completed and done == stored
    assert stored.found is resolved
    assert bytes(stored.value) == (b"42" if resolved else b"null")
    assert world.keys("promise_waiters") == []


@pytest.mark.parametrize(
    ("rejection", "value"),
    [pytest.param(None, b'"ok"', id="resolve"), pytest.param(Failure(code=422, message="bad"), None, id="reject")],
)
def test_a_promise_complete_stores_the_promise(world: World, rejection: Failure | None, value: bytes | None) -> None:
    """Complete stores the promise (value or failure) and is itself completed with null."""
    run = world.start("Signup", "run", "alice")
    _, done = world.append(run, 0, PromiseCompleteEntry(name="p", resolution=RAW(b'"ok"'), rejection=rejection))
    assert _promise(world, "p") == PromiseRecord(name="p", completed=True, value=value, failure=rejection)
    stored = world.entry(run.id, 0)
    assert isinstance(stored, PromiseCompleteEntry) and stored.completed and stored.failure is None
    assert stored.value == NULL and done == stored
    assert _promise(world, "p", key="bob") is None


def test_a_second_promise_complete_is_a_409_and_keeps_the_first_value(world: World) -> None:
    """Completing a completed promise journals the entry with a 409 failure; the value stays."""
    _resolve(world, "p", b"1")
    run = world.start("Signup", "run", "alice")
    world.append(run, 0, PromiseCompleteEntry(name="p", resolution=RAW(b"2")))
    stored = world.entry(run.id, 0)
    assert isinstance(stored, PromiseCompleteEntry) and stored.completed
    assert stored.failure is not None and stored.failure.code == 409
    assert _promise(world, "p") == PromiseRecord(name="p", completed=True, value=b"1")


@pytest.mark.parametrize(
    ("value", "failure"),
    [
        pytest.param(b'"yes"', None, id="resolved"),
        pytest.param(b"null", Failure(code=400, message="no"), id="rejected"),
    ],
)
def test_completing_a_promise_wakes_its_suspended_waiter(world: World, value: bytes, failure: Failure | None) -> None:
    """The run suspended on a promise get is resumed when a shared handler completes the promise:
    its entry is completed with the value (or failure), its waiter row and wait are gone, and its
    next attempt is committed and queued for sending."""
    run = world.start("Signup", "run", "alice")
    world.append(run, 0, PromiseGetEntry(name="p"))
    suspended, _, _ = world.settle(run, Suspended(waiting_on=[0]))
    assert suspended.status == "suspended"
    other = world.start("Signup", "status", "alice")
    effects, _ = world.append(other, 0, PromiseCompleteEntry(name="p", resolution=RAW(value), rejection=failure))
    woken = world.record(run.id)
    assert (woken.status, woken.attempt, woken.promise_waits) == ("running", run.attempt + 1, [])
    assert effects.launch == [woken]
    entry = world.entry(run.id, 0)
    assert isinstance(entry, PromiseGetEntry) and entry.completed
    assert (bytes(entry.value), entry.failure) == (value, failure)
    assert world.keys("promise_waiters") == []


def test_an_invocation_can_complete_the_promise_it_waits_on(world: World) -> None:
    """A run that waits on a promise and then completes it itself sees its own get completed; it
    stays on its current attempt (it is running, not suspended), and both entries get seqs."""
    run = world.start("Signup", "run", "alice")
    world.append(run, 0, PromiseGetEntry(name="p"))
    effects, _ = world.append(run, 1, PromiseCompleteEntry(name="p", resolution=RAW(b"7")))
    after = world.record(run.id)
    assert (after.status, after.attempt, after.token, after.promise_waits) == ("running", run.attempt, run.token, [])
    assert after.completion_seq == 2
    got, done = world.entry(run.id, 0), world.entry(run.id, 1)
    assert isinstance(got, PromiseGetEntry) and got.completed and bytes(got.value) == b"7"
    assert isinstance(done, PromiseCompleteEntry) and done.completed
    assert {got.seq, done.seq} == {1, 2}
    assert effects.launch == []
    assert world.keys("promise_waiters") == []


def test_a_stale_promise_waiter_is_dropped_when_the_promise_completes(world: World) -> None:
    """A waiter row whose invocation is gone (purged) does not stop the promise from completing:
    the row is deleted and the live waiters are still woken."""
    run = world.start("Signup", "run", "alice")
    world.append(run, 0, PromiseGetEntry(name="p"))
    stale = promise_key("Signup", "alice", "p") + journal_key("inv_gone", 3)
    world.write(lambda txn: txn.put("promise_waiters", stale, b""))
    _resolve(world, "p")
    entry = world.entry(run.id, 0)
    assert isinstance(entry, PromiseGetEntry) and entry.completed
    assert world.keys("promise_waiters") == []


def test_promises_are_per_workflow_key(world: World) -> None:
    """A waiter on another key's promise of the same name is not woken."""
    bob = world.start("Signup", "run", "bob")
    world.append(bob, 0, PromiseGetEntry(name="p"))
    _resolve(world, "p")
    entry = world.entry(bob.id, 0)
    assert isinstance(entry, PromiseGetEntry) and not entry.completed
    assert world.keys("promise_waiters") == [promise_key("Signup", "bob", "p") + journal_key(bob.id, 0)]
