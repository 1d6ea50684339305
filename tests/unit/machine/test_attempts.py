"""Attempts and step acks: `begin_attempt`, and the fencing and limits of `append`."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from durable_core.errors import BadRequest, Fenced, PayloadTooLarge
from durable_core.keys import START_INDEX
from durable_core.records import Status
from handlers_sdk.ids import legacy_child_invocation_id
from handlers_sdk.protocol import (
    NULL,
    CallEntry,
    Entry,
    JournalItem,
    PromisePeekEntry,
    RunEntry,
    SleepEntry,
    child_invocation_id,
    encode,
)
from tests.unit.machine.world import NOW, World, limits

RAW = msgspec.Raw


@pytest.mark.parametrize("status", ["running", "backing-off"])
def test_begin_attempt_starts_a_new_fenced_attempt(world: World, status: Status) -> None:
    """A running (recovered) or backing-off invocation gets attempt + 1 with the new token."""
    record = world.with_status(status, attempt=4, next_retry_ms=NOW + 10)
    world.now = NOW + 50
    started = world.write(lambda txn: world.machine.begin_attempt(txn, record.id, now=world.now, token="t-5"))
    assert started is not None
    assert (started.status, started.attempt, started.token, started.next_retry_ms) == ("running", 5, "t-5", 0)
    assert started.modified_ms == NOW + 50
    assert world.record(record.id) == started


@pytest.mark.parametrize("status", ["pending", "scheduled", "suspended", "paused", "completed"])
def test_begin_attempt_makes_none_in_other_statuses(world: World, status: Status) -> None:
    """Pending, scheduled, suspended, paused and completed invocations get no attempt."""
    record = world.with_status(status, attempt=2)
    assert world.write(lambda txn: world.machine.begin_attempt(txn, record.id, now=NOW, token="t")) is None
    assert world.record(record.id) == record


def test_begin_attempt_of_an_unknown_invocation_is_none(world: World) -> None:
    """No record, no attempt (and no error: recovery races purges)."""
    assert world.write(lambda txn: world.machine.begin_attempt(txn, "inv_nope", now=NOW, token="t")) is None


@pytest.mark.parametrize(
    ("attempt_delta", "token", "status"),
    [
        pytest.param(-1, None, "running", id="older-attempt"),
        pytest.param(1, None, "running", id="newer-attempt"),
        pytest.param(0, "stolen", "running", id="wrong-token"),
        pytest.param(0, None, "suspended", id="suspended"),
        pytest.param(0, None, "paused", id="paused"),
        pytest.param(0, None, "backing-off", id="backing-off"),
        pytest.param(0, None, "completed", id="completed"),
    ],
)
def test_append_is_fenced_unless_the_attempt_is_current(
    world: World, attempt_delta: int, token: str | None, status: Status
) -> None:
    """An ack from anything but the current running attempt (number and token) is Fenced and
    journals nothing."""
    record = world.start()
    stored = world.put(msgspec.structs.replace(record, status=status))
    item = JournalItem(index=0, entry=RunEntry(name="step"))
    with pytest.raises(Fenced):
        world.write(
            lambda txn: world.machine.append(
                txn, record.id, record.attempt + attempt_delta, token or record.token, item, now=NOW
            )
        )
    assert world.items(record.id) == []
    assert world.record(record.id) == stored


def test_append_to_an_unknown_invocation_is_fenced(world: World) -> None:
    """An ack for an invocation that does not exist (purged) is Fenced."""
    item = JournalItem(index=0, entry=RunEntry(name="step"))
    with pytest.raises(Fenced):
        world.write(lambda txn: world.machine.append(txn, "inv_gone", 1, "t", item, now=NOW))


def _call(parent_id: str, index: int) -> CallEntry:
    return CallEntry(
        service="Greeter", handler="greet", input=msgspec.Raw(b"1"), invocation_id=child_invocation_id(parent_id, index)
    )


@pytest.mark.parametrize(
    ("first", "again"),
    [
        pytest.param(
            RunEntry(name="s", value=msgspec.Raw(b"1")), RunEntry(name="s", value=msgspec.Raw(b"1")), id="run"
        ),
        pytest.param(
            SleepEntry(name="nap", wake_at_ms=NOW + 10), SleepEntry(name="nap", wake_at_ms=NOW + 99), id="sleep"
        ),
        pytest.param(None, None, id="call"),
    ],
)
def test_the_same_operation_resent_at_its_index_is_accepted_once(
    world: World, first: Entry | None, again: Entry | None
) -> None:
    """A re-sent ack (its response was lost) is accepted and changes nothing: the journal keeps
    the first entry, no second timer or child is made, and no effect is produced."""
    record = world.start()
    first = first or _call(record.id, 0)
    again = again or _call(record.id, 0)
    world.append(record, 0, first)
    journal, timers, invocations = world.items(record.id), world.keys("timers"), world.keys("invocations")
    effects, done = world.append(record, 0, again)
    assert world.items(record.id) == journal
    assert world.keys("timers") == timers
    assert world.keys("invocations") == invocations
    assert (effects.launch, effects.wake_at, done) == ([], None, None)


@pytest.mark.parametrize(
    ("first", "other"),
    [
        pytest.param(RunEntry(name="s", value=RAW(b"1")), RunEntry(name="s", value=RAW(b"2")), id="run-other-value"),
        pytest.param(RunEntry(name="s"), RunEntry(name="t"), id="run-other-name"),
        pytest.param(RunEntry(name="s"), SleepEntry(name="s", wake_at_ms=NOW), id="other-kind"),
        pytest.param(SleepEntry(name="a", wake_at_ms=NOW), SleepEntry(name="b", wake_at_ms=NOW), id="sleep-other-name"),
    ],
)  # fmt: skip
def test_another_operation_at_a_taken_index_is_fenced(world: World, first: Entry, other: Entry) -> None:
    """A different operation (or a step with another result) at an index already journaled is
    Fenced: another attempt got there first. The journal keeps the first entry."""
    record = world.start()
    world.append(record, 0, first)
    journal = world.items(record.id)
    with pytest.raises(Fenced, match="already taken"):
        world.append(record, 0, other)
    assert world.items(record.id) == journal


@pytest.mark.parametrize(
    ("index", "refused"),
    [
        pytest.param(48, False, id="below-the-limit"),
        pytest.param(49, False, id="last-slot"),
        pytest.param(50, True, id="at-the-limit"),
        pytest.param(START_INDEX, True, id="start-index"),
    ],
)
def test_a_full_journal_is_payload_too_large(world: World, index: int, refused: bool) -> None:
    """Indexes from `max_journal_entries` (50 here) on, and START_INDEX, are refused with 413."""
    record = world.start()
    if refused:
        with pytest.raises(PayloadTooLarge, match="full"):
            world.append(record, index, RunEntry(name="s"))
        assert world.items(record.id) == []
    else:
        world.append(record, index, RunEntry(name="s"))
        assert [item.index for item in world.items(record.id)] == [index]


@pytest.mark.parametrize(("slack", "refused"), [(0, False), (-1, True)])
def test_check_entry_size_refuses_entries_over_the_limit(slack: int, refused: bool) -> None:
    """An entry whose stored JSON is over `max_entry_bytes` is PayloadTooLarge; at the limit it passes."""
    bare = len(encode(JournalItem(index=0, entry=RunEntry(name="s", value=msgspec.Raw(b'""')))))
    size = 256
    world = World(limits(max_entry_bytes=size + slack))
    value = msgspec.Raw(b'"' + b"x" * (size - bare) + b'"')
    item = JournalItem(index=0, entry=RunEntry(name="s", value=value))
    assert len(encode(item)) == size
    if refused:
        with pytest.raises(PayloadTooLarge, match="over"):
            world.machine.check_entry_size(item, "inv_1")
    else:
        world.machine.check_entry_size(item, "inv_1")


@pytest.mark.parametrize(
    ("entry", "answered"),
    [
        pytest.param(RunEntry(name="s", value=NULL), False, id="run-not-completable"),
        pytest.param(SleepEntry(wake_at_ms=NOW + 5), False, id="sleep-open"),
        pytest.param(PromisePeekEntry(name="p"), True, id="peek-completed-on-the-spot"),
    ],
)
def test_append_answers_with_the_entry_only_when_it_completed_on_the_spot(
    world: World, entry: Entry, answered: bool
) -> None:
    """`append` returns the journaled entry if journaling it completed it, else None."""
    record = world.start("Signup", "run", "alice")
    _, done = world.append(record, 0, entry)
    if answered:
        assert done is not None and done == world.entry(record.id, 0)
        assert isinstance(done, PromisePeekEntry) and done.completed
    else:
        assert done is None


@pytest.mark.parametrize("rule", [child_invocation_id, legacy_child_invocation_id], ids=["current", "legacy"])
def test_a_call_creates_its_child_under_either_id_rule(world: World, rule: Callable[[str, int], str]) -> None:
    """The child id of a call is derived from (parent, index): by the current rule (Restate's id
    format) or by the rule of SDKs before it, so a handler whose SDK is not upgraded keeps working."""
    record = world.start()
    call = CallEntry(service="Greeter", handler="greet", input=RAW(b"1"), invocation_id=rule(record.id, 0))
    world.append(record, 0, call)
    assert call.invocation_id.encode() in world.keys("invocations")


def test_a_call_with_an_id_of_no_rule_is_refused(world: World) -> None:
    """A child id that neither rule derives would let a handler name (or collide with) any id."""
    record = world.start()
    call = CallEntry(service="Greeter", handler="greet", input=RAW(b"1"), invocation_id=world.start().id)
    with pytest.raises(BadRequest, match="child id"):
        world.append(record, 0, call)
