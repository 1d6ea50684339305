"""Retention (`due_expiries`, `sweep`), registration, state edits and the read use cases
(`get`, `list_invocations`, `status_counts`, `active`, deployments and services)."""

from __future__ import annotations

import dataclasses
import functools

import msgspec
import pytest

from durable_core.errors import NotFound
from durable_core.keyed import object_hash, read_promise
from durable_core.keys import expiry_key, idempotency_key, split_expiry_key
from durable_core.machine import Machine
from durable_core.records import DeploymentRecord, InvocationRecord, ServiceRecord, Status
from handlers_sdk.protocol import Completed, PromiseCompleteEntry, RunEntry, SetStateEntry
from tests.unit.machine.world import NOW, RETENTION_MS, World

RAW = msgspec.Raw


def _complete_at(world: World, at: int) -> InvocationRecord:
    """An invocation completed at time `at` (so it expires at `at` + retention)."""
    record = world.start()
    world.now = at
    done = world.settle(record, Completed())[0]
    world.now = NOW
    return done


# -- retention --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now_offset", "limit", "due"),
    [
        pytest.param(-1, 10, [], id="none-due"),
        pytest.param(0, 10, [0], id="due-exactly-now"),
        pytest.param(25, 10, [0, 10, 20], id="some-due"),
        pytest.param(25, 2, [0, 10], id="limited"),
    ],
)
def test_due_expiries_lists_expired_invocations_in_expiry_order(
    world: World, now_offset: int, limit: int, due: list[int]
) -> None:
    """`due_expiries` yields the retention keys due by now, earliest first, at most `limit`."""
    completed = {offset: _complete_at(world, NOW + offset) for offset in (20, 0, 30, 10)}
    keys = world.read(lambda txn: world.machine.due_expiries(txn, NOW + RETENTION_MS + now_offset, limit))
    assert [split_expiry_key(key) for key in keys] == [
        (NOW + offset + RETENTION_MS, completed[offset].id) for offset in due
    ]


def test_sweep_purges_expired_invocations_and_everything_they_own(world: World) -> None:
    """Sweeping a due key purges that invocation's record, input, journal, idempotency key and
    retention row, and a workflow run's state and promises; others are kept."""
    keeper = _complete_at(world, NOW + 1_000)
    run = world.start("Signup", "run", "alice", idempotency="idem")
    world.append(run, 0, RunEntry(name="s"))
    world.append(run, 1, SetStateEntry(key="s", value=RAW(b"1")))
    world.append(run, 2, PromiseCompleteEntry(name="p", resolution=RAW(b"1")))
    world.settle(run, Completed())
    due = world.read(lambda txn: world.machine.due_expiries(txn, NOW + RETENTION_MS, 10))
    assert [split_expiry_key(key)[1] for key in due] == [run.id]
    assert world.write(lambda txn: world.machine.sweep(txn, due)) == 1
    assert not world.exists(run.id)
    assert world.items(run.id) == []
    assert world.get_row("inputs", run.id.encode()) is None
    assert world.get_row("idempotency", idempotency_key("Signup", "run", "alice", "idem")) is None
    assert world.get_row("workflows", object_hash("Signup", "alice")) is None
    assert world.read(lambda txn: world.machine.state(txn, "Signup", "alice")) == {}
    assert world.read(lambda txn: read_promise(txn, "Signup", "alice", "p")) is None
    assert world.keys("expiry") == [expiry_key(keeper.expires_ms, keeper.id)]
    assert world.exists(keeper.id)


def test_sweeping_an_invocation_purged_by_hand_drops_its_row_and_counts_nothing(world: World) -> None:
    """A retention key whose invocation is already gone is removed, and not counted as purged."""
    done = _complete_at(world, NOW)
    key = expiry_key(done.expires_ms, done.id)
    world.act("purge", done.id)
    world.write(lambda txn: txn.put("expiry", key, b""))
    assert world.write(lambda txn: world.machine.sweep(txn, [key])) == 0
    assert world.keys("expiry") == []


# -- registration and state -------------------------------------------------------------------


def test_register_stores_the_deployment_and_its_services(world: World) -> None:
    """`register` writes the deployment and makes it the one serving each service (replacing
    the service's previous record)."""
    old = ServiceRecord(name="Greeter", type="service", handlers={"greet": ""}, deployment_id="dp_old")
    new = ServiceRecord(name="Greeter", type="service", handlers={"greet": "", "wave": ""}, deployment_id="dp_new")
    other = ServiceRecord(name="Counter", type="object", handlers={"add": "exclusive"}, deployment_id="dp_new")
    world.write(lambda txn: world.machine.register(txn, DeploymentRecord(id="dp_old", uri="http://a"), [old]))
    deployment = DeploymentRecord(id="dp_new", uri="http://b", services=["Greeter", "Counter"], created_ms=NOW)
    world.write(lambda txn: world.machine.register(txn, deployment, [new, other]))
    assert world.read(world.machine.deployments) == [deployment, DeploymentRecord(id="dp_old", uri="http://a")]
    assert world.read(world.machine.services) == [other, new]


def test_replace_state_replaces_the_whole_state_of_one_key(world: World) -> None:
    """An operator's edit drops every name not in the new state and leaves other keys alone."""
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "k", {"a": b"1", "b": b"2"}))
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "k2", {"a": b"9"}))
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "k", {"b": b"3", "c": b"4"}))
    assert world.read(lambda txn: world.machine.state(txn, "Counter", "k")) == {"b": b"3", "c": b"4"}
    assert world.read(lambda txn: world.machine.state(txn, "Counter", "k2")) == {"a": b"9"}
    world.write(lambda txn: world.machine.replace_state(txn, "Counter", "k", {}))
    assert world.read(lambda txn: world.machine.state(txn, "Counter", "k")) == {}


# -- reads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("invocation_id", ["inv_nope", "inv_ünïcode"])
def test_get_of_an_unknown_invocation_is_not_found(world: World, invocation_id: str) -> None:
    """`get` raises NotFound for an unknown id, including one that cannot be an id (non-ASCII)."""
    world.start()
    with pytest.raises(NotFound):
        world.read(lambda txn: world.machine.get(txn, invocation_id))


def _population(world: World) -> dict[str, InvocationRecord]:
    """One invocation per status reachable from outside, created in this order."""
    return {
        "running": world.start(),
        "completed": _complete_at(world, NOW),
        "holder": world.start("Counter", "add", "k"),
        "pending": world.start("Counter", "add", "k"),
        "scheduled": world.start("Greeter", "shout", delay_ms=1_000),
    }


def test_status_counts_and_active(world: World) -> None:
    """`status_counts` counts every status, completed included; `active` lists the invocations
    that have not completed, in id (creation) order."""
    made = _population(world)
    assert world.read(world.machine.status_counts) == {"running": 2, "pending": 1, "scheduled": 1, "completed": 1}
    active = world.read(world.machine.active)
    assert [record.id for record in active] == [made[name].id for name in ("running", "holder", "pending", "scheduled")]


@pytest.mark.parametrize(
    ("status", "service", "handler", "names"),
    [
        pytest.param(None, None, None, ["running", "completed", "holder", "pending", "scheduled"], id="all"),
        pytest.param("running", None, None, ["running", "holder"], id="running"),
        pytest.param("completed", None, None, ["completed"], id="completed"),
        pytest.param("paused", None, None, [], id="none-paused"),
        pytest.param(None, "Counter", None, ["holder", "pending"], id="service"),
        pytest.param(None, "Greeter", "shout", ["scheduled"], id="handler"),
        pytest.param("pending", "Greeter", None, [], id="status-and-service"),
    ],
)
def test_list_invocations_filters(
    world: World, status: Status | None, service: str | None, handler: str | None, names: list[str]
) -> None:
    """`list_invocations` returns the invocations matching every filter, in id order."""
    made = _population(world)
    found, cursor = world.read(
        lambda txn: world.machine.list_invocations(txn, status=status, service=service, handler=handler)
    )
    assert [record.id for record in found] == [made[name].id for name in names]
    assert cursor is None


@pytest.mark.parametrize("status", [None, "running"])
def test_list_invocations_pages_with_a_cursor(world: World, status: str | None) -> None:
    """Pages of `limit` records; the cursor (the last id of a page) is returned only when more
    match, and the next page starts right after it, so every invocation is listed once."""
    ids = [world.start().id for _ in range(5)]

    def page(after: str | None) -> tuple[list[InvocationRecord], str | None]:
        return world.read(lambda txn: world.machine.list_invocations(txn, status=status, limit=2, after=after))

    pages: list[list[str]] = []
    after: str | None = None
    while True:
        found, after = page(after)
        pages.append([record.id for record in found])
        if after is None:
            break
        assert after == found[-1].id
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]


@pytest.mark.parametrize("new_retention_ms", [5_000, RETENTION_MS * 10], ids=["lowered", "raised"])
@pytest.mark.parametrize("limit", [1, 2, 100], ids=["batch-1", "batch-2", "one-batch"])
def test_apply_retention_restamps_what_completed_under_the_old_retention(
    world: World, new_retention_ms: int, limit: int
) -> None:
    """A changed retention applies to invocations completed before the change: every expiry row
    and record is re-stamped to completed_ms + the new retention, in batches from a cursor, each
    row moved once, and the walk records the retention it applied (a second walk is a no-op)."""
    completed = [_complete_at(world, NOW + offset) for offset in (30, 0, 20, 10)]
    assert not world.read(world.machine.retention_applied)
    machine = Machine(dataclasses.replace(world.machine.limits, retention_ms=new_retention_ms), world.machine.resolve)
    cursor: bytes | None = b""
    walks = 0
    while cursor is not None:
        cursor = world.write(functools.partial(machine.apply_retention, after=cursor, limit=limit))
        walks += 1
        # Each row is visited at most twice (before and after it moved): the walk ends.
        assert walks <= 2 * len(completed) + 1
    assert world.read(machine.retention_applied)
    assert not world.read(world.machine.retention_applied)  # the old retention no longer holds
    expected = sorted((record.completed_ms + new_retention_ms, record.id) for record in completed)
    assert [split_expiry_key(key) for key in world.keys("expiry")] == expected
    for record in completed:
        assert world.record(record.id).expires_ms == record.completed_ms + new_retention_ms
    before = world.keys("expiry")
    assert world.write(lambda txn: machine.apply_retention(txn, b"", 100)) is None
    assert world.keys("expiry") == before
    # Now the sweep follows the new retention.
    due = world.read(lambda txn: machine.due_expiries(txn, NOW + 10 + new_retention_ms, 100))
    assert [split_expiry_key(key)[1] for key in due] == [r.id for r in sorted(completed, key=lambda r: r.completed_ms)][
        :2
    ]


def test_apply_retention_drops_orphan_rows(world: World) -> None:
    """A retention row whose invocation is gone (or not completed) is removed by the walk."""
    done = _complete_at(world, NOW)
    world.write(lambda txn: txn.put("expiry", expiry_key(NOW + 1, "inv_gone"), b""))
    assert world.write(lambda txn: world.machine.apply_retention(txn, b"", 100)) is None
    assert [split_expiry_key(key)[1] for key in world.keys("expiry")] == [done.id]
