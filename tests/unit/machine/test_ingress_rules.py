"""The rules Restate's ingress follows that the machine owns: awakeable completions accepted from
outside (`Machine.accept_awakeable`), a workflow's run called again (`duplicate_call_failure`),
attaching by idempotency key (`idempotent_invocation`) and a delayed workflow submission."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.effects import Effects
from durable_core.errors import BadRequest, NotFound
from durable_core.machine import WORKFLOW_ALREADY_INVOKED
from durable_core.records import InvocationRecord
from durable_core.txn import ReadTxn
from handlers_sdk.protocol import AwakeableEntry, Completed, Failure, SleepEntry, Suspended, awakeable_id
from tests.unit.machine.world import NOW, RETENTION_MS, World

WELL_FORMED_UNKNOWN = awakeable_id("inv_" + "0" * 26, 1)


def _waiting(world: World, suspend: bool = True) -> tuple[InvocationRecord, str]:
    """An invocation with a sleep at index 0 and an awakeable at index 1 (suspended on it)."""
    record = world.start()
    world.append(record, 0, SleepEntry(wake_at_ms=NOW + 60_000))
    awakeable = awakeable_id(record.id, 1)
    world.append(record, 1, AwakeableEntry(id=awakeable))
    if suspend:
        world.settle(record, Suspended(waiting_on=[1]))
    return world.record(record.id), awakeable


def _accept(world: World, awakeable: str, value: bytes | None = None, failure: Failure | None = None) -> Effects:
    return world.write(
        lambda txn: world.machine.accept_awakeable(txn, awakeable, now=NOW, value=value, failure=failure)
    )


def _rows(world: World) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every invocation and journal row, to show that nothing changed."""

    def read(txn: ReadTxn) -> dict[str, list[tuple[bytes, bytes]]]:
        return {db: list(txn.items_from(db, b"")) for db in ("invocations", "journal")}

    return world.read(read)


# -- awakeables -------------------------------------------------------------------------------


def test_accepting_an_awakeable_completes_it_and_resumes_its_waiter(world: World) -> None:
    record, awakeable = _waiting(world)
    effects = _accept(world, awakeable, b'{"ok":1}')
    entry = world.entry(record.id, 1)
    assert isinstance(entry, AwakeableEntry) and entry.completed and bytes(entry.value) == b'{"ok":1}'
    resumed = world.record(record.id)
    assert resumed.status == "running"
    assert effects.launch == [resumed]


def test_a_second_completion_is_accepted_and_the_first_one_wins(world: World) -> None:
    record, awakeable = _waiting(world)
    _accept(world, awakeable, b"1")
    first = world.entry(record.id, 1)
    after = world.record(record.id)
    effects = _accept(world, awakeable, b"2")
    _accept(world, awakeable, failure=Failure(message="late"))
    assert world.entry(record.id, 1) == first
    assert world.record(record.id) == after
    assert effects.launch == []


@pytest.mark.parametrize("case", ["unknown-invocation", "completed-invocation", "index-of-a-sleep"])
def test_a_completion_with_nothing_to_complete_is_accepted_and_changes_nothing(world: World, case: str) -> None:
    """Restate answers 202 for a well-formed id whatever it names; nothing is written."""
    record, awakeable = _waiting(world, suspend=False)
    if case == "unknown-invocation":
        awakeable = WELL_FORMED_UNKNOWN
    elif case == "completed-invocation":
        world.settle(record, Completed())
    else:
        awakeable = awakeable_id(record.id, 0)
    before = _rows(world)
    _accept(world, awakeable, b"1")
    assert _rows(world) == before


def test_an_index_the_active_invocation_has_not_journaled_yet_is_not_found(world: World) -> None:
    """Accepting it would lose it (nothing would apply it later): the caller is told to retry."""
    record, _ = _waiting(world, suspend=False)
    with pytest.raises(NotFound, match="no entry 7 yet"):
        _accept(world, awakeable_id(record.id, 7), b"1")
    assert world.record(record.id) == record


@pytest.mark.parametrize("garbage", ["inv_abc", "awk_", "awk_abc_1", "awk_nope_1", "awk_" + "0" * 26 + "_x"])
def test_a_malformed_awakeable_id_is_a_bad_request(world: World, garbage: str) -> None:
    with pytest.raises(BadRequest, match="not an awakeable id"):
        _accept(world, garbage, b"1")


# -- a workflow's run called again ----------------------------------------------------------------


@pytest.mark.parametrize("first_completed", [False, True])
def test_calling_a_workflows_run_again_fails_at_once_with_409(world: World, first_completed: bool) -> None:
    run = world.start("Signup", "run", "alice")
    if first_completed:
        run = world.put(msgspec.structs.replace(run, status="completed", expires_ms=NOW + 10))
    again, created, _ = world.submit("Signup", "run", "alice")
    assert world.machine.duplicate_call_failure(again, created) == WORKFLOW_ALREADY_INVOKED
    assert WORKFLOW_ALREADY_INVOKED.code == 409
    assert world.machine.duplicate_call_failure(run, True) is None


def test_other_duplicates_wait_for_the_outcome(world: World) -> None:
    """A call repeating an idempotency key, or a workflow's shared handler, is not refused."""
    first = world.start(idempotency="k")
    again, created, _ = world.submit(idempotency="k")
    assert again.id == first.id and not created
    assert world.machine.duplicate_call_failure(again, created) is None
    shared, created, _ = world.submit("Signup", "status", "alice")
    assert world.machine.duplicate_call_failure(shared, created) is None


# -- attach by idempotency key ------------------------------------------------------------------


def test_an_idempotency_key_names_its_invocation_until_it_expires(world: World) -> None:
    record = world.start("Counter", "add", "c1", idempotency="k1")

    def find(service: str, handler: str, key: str, idem: str, now: int = NOW) -> str | None:
        return world.read(lambda txn: world.machine.idempotent_invocation(txn, service, handler, key, idem, now=now))

    assert find("Counter", "add", "c1", "k1") == record.id
    assert find("Counter", "add", "c2", "k1") is None
    assert find("Counter", "get", "c1", "k1") is None
    assert find("Counter", "add", "c1", "k2") is None
    done = world.put(msgspec.structs.replace(record, status="completed", expires_ms=NOW + RETENTION_MS))
    assert find("Counter", "add", "c1", "k1", now=NOW + RETENTION_MS - 1) == done.id
    assert find("Counter", "add", "c1", "k1", now=NOW + RETENTION_MS) is None


# -- a delayed workflow submission --------------------------------------------------------------


def test_a_workflow_run_can_be_submitted_with_a_delay(world: World) -> None:
    """The run is scheduled, and it claims its key at once: a second submission finds it."""
    run, created, effects = world.submit("Signup", "run", "alice", delay_ms=5_000)
    assert created and run.status == "scheduled" and run.scheduled_at_ms == NOW + 5_000
    assert effects.launch == []
    assert world.read(lambda txn: world.machine.workflow_run(txn, "Signup", "alice")) == run.id
    again, created, _ = world.submit("Signup", "run", "alice")
    assert again.id == run.id and not created


def test_every_id_the_proxy_creates_is_well_formed() -> None:
    """Ingress ids, the ids of children of calls and sends, and the older forms a store may hold
    (base32hex times, base32 digests with letters past 'v') all match the pattern the ingress
    checks ids with."""
    from durable_core.keys import new_invocation_id
    from durable_core.machine import INVOCATION_ID_PATTERN
    from handlers_sdk.ids import legacy_child_invocation_id
    from handlers_sdk.protocol import child_invocation_id

    parent = new_invocation_id(1_700_000_000_000)
    legacy_parent = "inv_06h10pn5ug0kun4knfugrrgr5k"
    ids = [parent, *(child_invocation_id(parent, index) for index in range(200))]
    legacy = [legacy_parent, *(legacy_child_invocation_id(legacy_parent, index) for index in range(200))]
    assert all(INVOCATION_ID_PATTERN.fullmatch(i) for i in ids + legacy), [
        i for i in ids + legacy if not INVOCATION_ID_PATTERN.fullmatch(i)
    ]
    assert set("".join(i[4:] for i in legacy[1:])) & set("wxyz"), "old digests reach past 'v' (the case this guards)"
