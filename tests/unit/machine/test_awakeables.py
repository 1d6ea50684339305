"""`Machine.complete_awakeable`: resolving and rejecting awakeables from outside."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.errors import BadRequest, Conflict, NotFound
from durable_core.records import InvocationRecord
from handlers_sdk.protocol import AwakeableEntry, Completed, Failure, SleepEntry, Suspended, awakeable_id
from tests.unit.machine.world import NOW, World


def _waiting(world: World, suspend: bool = True) -> tuple[InvocationRecord, str]:
    """An invocation with an awakeable at index 1 (suspended on it if `suspend`)."""
    record = world.start()
    world.append(record, 0, SleepEntry(wake_at_ms=NOW + 60_000))
    awakeable = awakeable_id(record.id, 1)
    world.append(record, 1, AwakeableEntry(id=awakeable))
    if suspend:
        world.settle(record, Suspended(waiting_on=[1]))
    return world.record(record.id), awakeable


def _complete(world: World, awakeable: str, value: bytes | None = None, failure: Failure | None = None) -> None:
    world.write(lambda txn: world.machine.complete_awakeable(txn, awakeable, now=NOW, value=value, failure=failure))


@pytest.mark.parametrize(
    ("value", "failure"),
    [pytest.param(b'{"ok":1}', None, id="resolve"), pytest.param(None, Failure(code=400, message="no"), id="reject")],
)
def test_completing_an_awakeable_resumes_its_suspended_waiter(
    world: World, value: bytes | None, failure: Failure | None
) -> None:
    """Resolving (or rejecting) an awakeable completes its entry with the value (or failure) and
    the next seq, and starts the invocation suspended on it."""
    record, awakeable = _waiting(world)
    effects = world.write(
        lambda txn: world.machine.complete_awakeable(txn, awakeable, now=NOW, value=value, failure=failure)
    )
    entry = world.entry(record.id, 1)
    assert isinstance(entry, AwakeableEntry) and entry.completed and entry.seq == 1
    assert (bytes(entry.value), entry.failure) == (value or b"null", failure)
    resumed = world.record(record.id)
    assert (resumed.status, resumed.attempt) == ("running", record.attempt + 1)
    assert effects.launch == [resumed]


def test_completing_an_awakeable_of_a_running_invocation_keeps_its_attempt(world: World) -> None:
    """An awakeable completed while the attempt still runs is journaled; nothing restarts."""
    record, awakeable = _waiting(world, suspend=False)
    effects = world.write(lambda txn: world.machine.complete_awakeable(txn, awakeable, now=NOW, value=b"1"))
    assert effects.launch == []
    assert world.record(record.id).attempt == record.attempt


def test_an_awakeable_is_completed_once(world: World) -> None:
    """A second resolve or reject is a 409 and leaves the first value in the journal."""
    record, awakeable = _waiting(world)
    _complete(world, awakeable, b"1")
    entry = world.entry(record.id, 1)
    with pytest.raises(Conflict, match="already completed"):
        _complete(world, awakeable, b"2")
    with pytest.raises(Conflict):
        _complete(world, awakeable, failure=Failure(message="late"))
    assert world.entry(record.id, 1) == entry


@pytest.mark.parametrize("wrong", ["no-such-invocation", "no-such-index", "index-of-a-sleep"])
def test_an_unknown_awakeable_is_not_found(world: World, wrong: str) -> None:
    """An awakeable id naming no invocation, no entry, or an entry that is not an awakeable is 404."""
    record, _ = _waiting(world)
    awakeable = {
        "no-such-invocation": awakeable_id("inv_nobody", 1),
        "no-such-index": awakeable_id(record.id, 7),
        "index-of-a-sleep": awakeable_id(record.id, 0),
    }[wrong]
    with pytest.raises(NotFound, match="awakeable"):
        _complete(world, awakeable, b"1")
    assert world.record(record.id) == record


@pytest.mark.parametrize("garbage", ["inv_abc", "awk_", "awk_abc", "awk_abc_x", "awk_a-b_1"])
def test_something_that_is_not_an_awakeable_id_is_a_bad_request(world: World, garbage: str) -> None:
    """A string that cannot be an awakeable id is 400."""
    with pytest.raises(BadRequest, match="not an awakeable id"):
        _complete(world, garbage, b"1")


def test_an_awakeable_of_a_completed_invocation_is_a_conflict(world: World) -> None:
    """Once the invocation completed, its journal is final: completing its awakeable is a 409."""
    record, awakeable = _waiting(world, suspend=False)
    world.settle(record, Completed())
    with pytest.raises(Conflict):
        _complete(world, awakeable, b"1")
    entry = world.entry(record.id, 1)
    assert isinstance(entry, AwakeableEntry) and not entry.completed
    assert msgspec.json.encode(entry.value) == b"null"
