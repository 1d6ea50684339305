"""Creating invocations: `Machine.new_record` and `Machine.invoke` (admission, queueing behind a
key, delayed starts, idempotency keys, workflow runs once per key)."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.errors import NotFound
from durable_core.keyed import object_hash
from durable_core.keys import START_INDEX, idempotency_key, split_timer_key
from durable_core.records import HandlerKind
from tests.unit.machine.world import NOW, World


@pytest.mark.parametrize(
    ("service", "handler", "kind", "keyed", "deployment"),
    [
        ("Greeter", "greet", "", False, "dp_a"),
        ("Counter", "add", "exclusive", True, "dp_a"),
        ("Counter", "get", "shared", True, "dp_a"),
        ("Signup", "run", "workflow", True, "dp_b"),
        ("Signup", "status", "shared", True, "dp_b"),
    ],
)
def test_new_record_takes_kind_deployment_and_keyedness_from_the_resolver(
    world: World, service: str, handler: str, kind: HandlerKind, keyed: bool, deployment: str
) -> None:
    """A new record is pending at attempt 0 with its handler's kind, deployment and keyedness."""
    record = world.machine.new_record(
        "inv_x", service, handler, "k", now=NOW, random_seed=42, idempotency="idem", headers={"x-a": "1"}
    )
    assert (record.status, record.attempt, record.token) == ("pending", 0, "")
    assert (record.kind, record.keyed, record.deployment_id) == (kind, keyed, deployment)
    assert (record.created_ms, record.modified_ms, record.random_seed) == (NOW, NOW, 42)
    assert (record.idempotency_key, record.headers) == ("idem", {"x-a": "1"})


@pytest.mark.parametrize(("service", "handler"), [("Nope", "greet"), ("Greeter", "nope")])
def test_new_record_of_an_unknown_target_is_not_found(world: World, service: str, handler: str) -> None:
    """An unknown service or handler is a 404 before anything is written."""
    with pytest.raises(NotFound):
        world.machine.new_record("inv_x", service, handler, "", now=NOW, random_seed=1)


@pytest.mark.parametrize(
    ("service", "handler", "key", "locks"),
    [
        ("Greeter", "greet", "", False),
        ("Counter", "add", "k", True),
        ("Counter", "get", "k", False),
        ("Signup", "run", "k", True),
        ("Signup", "status", "k", False),
    ],
)
def test_invoke_admits_at_once_when_nothing_holds_the_key(
    world: World, service: str, handler: str, key: str, locks: bool
) -> None:
    """A new invocation starts (attempt 1, a token, queued for sending) and its rows are written;
    exclusive and workflow handlers take their key's lock, the others do not."""
    record, created, effects = world.submit(service, handler, key, body=b'{"a":1}')
    assert created
    assert (record.status, record.attempt) == ("running", 1)
    assert record.token
    assert effects.launch == [record]
    assert world.record(record.id) == record
    assert world.read(lambda txn: world.machine.input(txn, record.id)) == b'{"a":1}'
    assert world.keys("active") == [record.id.encode()]
    lock = world.get_row("locks", object_hash(service, key))
    assert lock == (record.id.encode() if locks else None)
    assert effects.wake_at is None and effects.completed == [] and effects.retry == []


def test_invoke_with_an_empty_body_stores_json_null(world: World) -> None:
    """An invocation without a body has the input ``null``."""
    record = world.start(body=b"")
    assert world.read(lambda txn: world.machine.input(txn, record.id)) == b"null"


@pytest.mark.parametrize(
    ("second_handler", "second_key", "queued"),
    [
        pytest.param("add", "k", True, id="exclusive-same-key-waits"),
        pytest.param("add", "other", False, id="exclusive-other-key-runs"),
        pytest.param("get", "k", False, id="shared-same-key-runs"),
    ],
)
def test_invoke_queues_an_exclusive_handler_behind_its_keys_holder(
    world: World, second_handler: str, second_key: str, queued: bool
) -> None:
    """While an exclusive invocation holds a key, the next exclusive one on that key is pending
    (no attempt, no token, an inbox row, nothing to send); other keys and shared handlers run."""
    holder = world.start("Counter", "add", "k")
    second, created, effects = world.submit("Counter", second_handler, second_key)
    assert created
    if queued:
        assert (second.status, second.attempt, second.token) == ("pending", 0, "")
        assert effects.launch == []
        assert len(world.keys("inbox")) == 1
        assert world.get_row("inbox", world.keys("inbox")[0]) == second.id.encode()
    else:
        assert second.status == "running"
        assert effects.launch == [second]
        assert world.keys("inbox") == []
    assert world.get_row("locks", object_hash("Counter", "k")) == holder.id.encode()


@pytest.mark.parametrize(("service", "handler", "key"), [("Greeter", "greet", ""), ("Counter", "add", "k")])
def test_invoke_with_a_delay_schedules_the_start(world: World, service: str, handler: str, key: str) -> None:
    """A delayed invocation is scheduled: no attempt, no lock yet, a start timer (START_INDEX)
    at now + delay, and the timer loop is asked to wake then."""
    record, created, effects = world.submit(service, handler, key, delay_ms=5_000)
    assert created
    assert (record.status, record.attempt, record.token, record.scheduled_at_ms) == ("scheduled", 0, "", NOW + 5_000)
    assert effects.launch == []
    assert effects.wake_at == NOW + 5_000
    assert [split_timer_key(k) for k in world.keys("timers")] == [(NOW + 5_000, record.id, START_INDEX)]
    assert world.keys("locks") == []
    assert world.keys("active") == [record.id.encode()]


@pytest.mark.parametrize("first_status", ["running", "completed"])
def test_an_idempotency_key_returns_the_first_invocation(world: World, first_status: str) -> None:
    """A second submission with the same idempotency key and target gets the first invocation
    back (running or completed and not expired), creates nothing and has no effects."""
    first = world.start(idempotency="idem-1")
    if first_status == "completed":
        first = world.put(msgspec.structs.replace(first, status="completed", expires_ms=NOW + 1))
    again, created, effects = world.submit(idempotency="idem-1")
    assert not created
    assert again == first
    assert effects.launch == [] and effects.completed == []
    assert world.read(lambda txn: txn.count("invocations")) == 1


@pytest.mark.parametrize(
    ("handler", "key"),
    [pytest.param("shout", "", id="other-handler"), pytest.param("greet", "k", id="other-key")],
)
def test_an_idempotency_key_is_scoped_to_its_target(world: World, handler: str, key: str) -> None:
    """The same idempotency key on another handler (or key) is another invocation."""
    first = world.start(idempotency="idem-1")
    other, created, _ = world.submit("Greeter", handler, key, idempotency="idem-1")
    assert created
    assert other.id != first.id


@pytest.mark.parametrize(
    ("expires_ms", "reused"),
    [
        pytest.param(NOW - 1, True, id="expired"),
        pytest.param(NOW, True, id="expires-now"),
        pytest.param(NOW + 1, False, id="not-yet"),
    ],
)
def test_an_expired_idempotency_key_is_free_again(world: World, expires_ms: int, reused: bool) -> None:
    """Once the first invocation's retention has passed (even before the sweeper purged it), the
    key starts a new invocation and now points to it."""
    first = world.start(idempotency="idem-1")
    world.put(msgspec.structs.replace(first, status="completed", expires_ms=expires_ms))
    second, created, _ = world.submit(idempotency="idem-1")
    assert created is reused
    row = world.get_row("idempotency", idempotency_key("Greeter", "greet", "", "idem-1"))
    assert row == (second.id if reused else first.id).encode()


@pytest.mark.parametrize("first_completed", [False, True])
def test_a_workflow_runs_once_per_key(world: World, first_completed: bool) -> None:
    """A second submission of a workflow's run on the same key gets the first run, running or
    completed; another key is another run."""
    run = world.start("Signup", "run", "alice")
    if first_completed:
        run = world.put(msgspec.structs.replace(run, status="completed", expires_ms=NOW + 10))
    again, created, effects = world.submit("Signup", "run", "alice")
    assert not created
    assert again == run
    assert effects.launch == []
    assert world.read(lambda txn: world.machine.workflow_run(txn, "Signup", "alice")) == run.id
    other, created, _ = world.submit("Signup", "run", "bob")
    assert created and other.status == "running"


def test_a_workflows_shared_handlers_are_not_runs(world: World) -> None:
    """Shared handlers of a workflow run any number of times and do not claim the key's run."""
    first, second = world.start("Signup", "status", "alice"), world.start("Signup", "status", "alice")
    assert first.id != second.id
    assert world.read(lambda txn: world.machine.workflow_run(txn, "Signup", "alice")) is None


def test_a_deduplicated_workflow_submission_leaves_no_dangling_idempotency_row(world: World) -> None:
    """Every idempotency row points to an existing invocation, also after a workflow submission
    that carried an idempotency key and was answered with the key's existing run."""
    run = world.start("Signup", "run", "alice")
    again, created, _ = world.submit("Signup", "run", "alice", idempotency="idem-1")
    assert not created and again.id == run.id
    for key in world.keys("idempotency"):
        target = world.get_row("idempotency", key)
        assert target is not None and world.exists(target.decode())
