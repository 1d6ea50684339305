"""Concurrency and rate limits (`durable_core.flow`) on the machine: slots, queues, buckets.

Every test ends by checking the invariants a crash must never break (`check_books`): each group's
slot count is the number of active invocations holding one of its slots, its queue count the
number of its queue rows, each queue row names an invocation pending in that queue, and a group
with a queue has no free slot.
"""

from __future__ import annotations

import msgspec
import pytest

from durable_core import flow
from durable_core.errors import BadRequest, NotFound
from durable_core.machine import Machine
from durable_core.records import DeploymentRecord, InvocationRecord, ServiceLimits
from handlers_sdk.protocol import (
    CallEntry,
    Completed,
    Errored,
    Failed,
    Failure,
    Limit,
    SendEntry,
    Suspended,
    child_invocation_id,
)
from tests.unit.machine.world import NOW, World, limits, resolver

DONE = Completed(value=msgspec.Raw(b'"ok"'))
DEPLOYMENT = DeploymentRecord(id="dp_a", uri="http://handlers", services=["Greeter"])


class Limited(World):
    """A world whose services have the limits in `self.flow` (changed by a test at will)."""

    def __init__(self, **services: ServiceLimits) -> None:
        super().__init__()
        self.flow: dict[str, ServiceLimits] = dict(services)
        self.machine.limits_of = self.flow.get

    def send(self, handler: str = "greet", *, limit_key: str = "", body: bytes = b'{"n":1}') -> InvocationRecord:
        """An ingress send of Greeter/`handler`, with a limit key header if given."""
        headers = {"x-restate-limit-key": limit_key} if limit_key else {}
        record = self.machine.new_record(
            self.new_id(), "Greeter", handler, "", now=self.now, random_seed=7, headers=headers
        )
        return self.write(lambda txn: self.machine.invoke(txn, record, body, now=self.now))[0]

    def statuses(self, *records: InvocationRecord) -> list[str]:
        return [self.record(r.id).status for r in records]

    def place(self, record: InvocationRecord) -> int | None:
        return self.read(lambda txn: self.machine.queue_position(txn, self.machine.get(txn, record.id)))

    def finish(self, record: InvocationRecord) -> list[str]:
        """Complete `record`'s current attempt; returns the ids its commit launched."""
        _, effects, _ = self.settle(self.record(record.id), DONE)
        return [launched.id for launched in effects.launch]

    def check_books(self) -> None:
        """The invariants of the limit groups (see the module docstring)."""
        holders: dict[str, int] = {}
        waiting: dict[str, set[str]] = {}
        for record in self.read(lambda txn: list(self.machine.active(txn))):
            for group in record.flow_slots:
                holders[group] = holders.get(group, 0) + 1
            if record.flow_wait:
                assert record.status == "pending", record
                waiting.setdefault(record.flow_wait, set()).add(record.id)
        with self.store.read() as txn:
            states = {state.group: state for svc in self.flow for state in flow.groups_of(txn, svc)}
        for group, count in holders.items():
            assert states[group].running == count, (group, states[group], count)
        for group, state in states.items():
            assert state.running == holders.get(group, 0), (group, state)
            assert state.queued == len(waiting.get(group, set())), (group, state, waiting)
            limit = flow._limit_of(self.flow.get(state.group.split("\x00")[1]), group)
            if state.queued:
                assert limit is not None and state.running >= limit.concurrency, (group, state)
        rows = self.read(lambda txn: [value.decode() for _, value in txn.items_from("flow_queue", b"")])
        assert sorted(rows) == sorted(i for ids in waiting.values() for i in ids)


def greet_limit(**kwargs: int) -> ServiceLimits:
    return ServiceLimits(handlers={"greet": Limit(**kwargs)})


# -- concurrency ------------------------------------------------------------------------------------


def test_a_concurrency_limit_queues_the_rest_in_arrival_order_with_their_place_in_line() -> None:
    world = Limited(Greeter=greet_limit(concurrency=2))
    sent = [world.send() for _ in range(5)]
    assert world.statuses(*sent) == ["running", "running", "pending", "pending", "pending"]
    assert [world.place(r) for r in sent] == [None, None, 1, 2, 3]
    world.check_books()
    # Each completion admits exactly the next in line, in the same transaction.
    assert world.finish(sent[1]) == [sent[2].id]
    assert world.statuses(*sent) == ["running", "completed", "running", "pending", "pending"]
    assert [world.place(r) for r in sent[3:]] == [1, 2]
    assert world.finish(sent[0]) == [sent[3].id]
    assert world.finish(sent[2]) == [sent[4].id]
    assert world.finish(sent[3]) == [] and world.finish(sent[4]) == []
    world.check_books()
    assert world.keys("flow") == [] and world.keys("flow_queue") == []  # nothing left behind


def test_a_handler_without_a_limit_on_a_limited_service_writes_no_limit_rows() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1))
    shouts = [world.send("shout") for _ in range(3)]
    assert world.statuses(*shouts) == ["running"] * 3
    assert world.keys("flow") == [] and world.keys("meta") == []
    assert all(not world.record(r.id).flow_slots for r in shouts)


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda w, r: w.settle(r, DONE), id="completion"),
        pytest.param(lambda w, r: w.settle(r, Failed(failure=Failure(code=400, message="no"))), id="failure"),
        pytest.param(lambda w, r: w.act("kill", r.id), id="kill"),
        pytest.param(
            lambda w, r: (
                w.act("cancel", r.id),
                w.settle(w.record(r.id), Failed(failure=Failure(code=409, message="c"))),
            ),
            id="cancel",
        ),
    ],
)
def test_every_end_frees_the_slot_and_starts_the_next(end: object) -> None:
    world = Limited(Greeter=greet_limit(concurrency=1))
    first, second = world.send(), world.send()
    assert world.statuses(first, second) == ["running", "pending"]
    end(world, world.record(first.id))  # type: ignore[operator]
    assert world.statuses(first, second) == ["completed", "running"]
    world.check_books()


def test_suspension_and_retries_keep_the_slot_until_completion() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1))
    first, second = world.send(), world.send()
    suspended, _, _ = world.settle(world.record(first.id), Suspended(waiting_on=[5]))
    assert suspended.status == "suspended" and world.record(second.id).status == "pending"
    world.check_books()
    world.put(msgspec.structs.replace(suspended, status="running", token="tok"))
    backing_off, _, _ = world.settle(world.record(first.id), Errored(message="boom"))
    assert backing_off.status == "backing-off" and world.record(second.id).status == "pending"
    world.check_books()


def test_cancelling_a_queued_invocation_leaves_the_queue_and_moves_the_others_up() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1))
    running, a, b, c = (world.send() for _ in range(4))
    done, effects = world.act("cancel", b.id)
    assert done is not None and done.status == "completed" and effects.launch == []
    assert [world.place(r) for r in (a, c)] == [1, 2]
    world.check_books()
    assert world.finish(running) == [a.id]
    assert world.finish(a) == [c.id]
    world.check_books()


def test_a_service_limit_counts_every_handler_together() -> None:
    world = Limited(Greeter=ServiceLimits(service=Limit(concurrency=2)))
    greet, shout, third = world.send("greet"), world.send("shout"), world.send("greet")
    assert world.statuses(greet, shout, third) == ["running", "running", "pending"]
    assert world.finish(shout) == [third.id]
    world.check_books()


def test_per_key_limits_keep_keys_apart_and_the_key_comes_from_a_header_or_the_input() -> None:
    world = Limited(Greeter=ServiceLimits(handler_keys={"greet": Limit(concurrency=1)}, key_fields={"greet": "tenant"}))
    a1 = world.send(limit_key="a")
    a2 = world.send(body=b'{"tenant": "a"}')  # from the input field
    b1 = world.send(limit_key="b")
    free = world.send()  # no key: no per-key limit applies
    assert [world.record(r.id).limit_key for r in (a1, a2, b1, free)] == ["a", "a", "b", ""]
    assert world.statuses(a1, a2, b1, free) == ["running", "pending", "running", "running"]
    assert world.finish(b1) == []
    assert world.finish(a1) == [a2.id]
    world.check_books()


def test_a_header_key_wins_over_the_input_and_a_long_one_is_refused() -> None:
    world = Limited(Greeter=ServiceLimits(handler_keys={"greet": Limit(concurrency=1)}, key_fields={"greet": "tenant"}))
    assert world.record(world.send(limit_key="h", body=b'{"tenant": "i"}').id).limit_key == "h"
    with pytest.raises(BadRequest, match="limit key"):
        world.send(limit_key="k" * (flow.MAX_LIMIT_KEY + 1))


def test_one_freed_by_its_key_but_blocked_by_its_handler_moves_to_that_queue_in_arrival_order() -> None:
    world = Limited(
        Greeter=ServiceLimits(handlers={"greet": Limit(concurrency=2)}, handler_keys={"greet": Limit(concurrency=1)})
    )
    a1 = world.send(limit_key="a")
    a2 = world.send(limit_key="a")  # waits for key a
    b1 = world.send(limit_key="b")  # takes the handler's second slot
    c1 = world.send(limit_key="c")  # waits for the handler
    assert world.statuses(a1, a2, b1, c1) == ["running", "pending", "running", "pending"]
    world.check_books()
    # a1's end frees a handler slot (c1 takes it) and key a's slot: a2 moves to the handler's queue.
    assert world.finish(a1) == [c1.id]
    assert world.record(a2.id).flow_wait.startswith("handler") and world.place(a2) == 1
    world.check_books()
    assert world.finish(b1) == [a2.id]
    world.check_books()


def test_child_invocations_of_calls_and_sends_honour_the_limits() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1))
    world.services["Caller"] = world.services["Greeter"].__class__(
        name="Caller", type="service", handlers={"run": ""}, deployment_id="dp_a"
    )
    busy = world.send()
    parent = world.start("Caller", "run")
    call = CallEntry(service="Greeter", handler="greet", invocation_id=child_invocation_id(parent.id, 1))
    send = SendEntry(service="Greeter", handler="greet", invocation_id=child_invocation_id(parent.id, 2))
    world.append(parent, 1, call)
    world.append(parent, 2, send)
    children = [world.record(child_invocation_id(parent.id, i)) for i in (1, 2)]
    assert [c.status for c in children] == ["pending", "pending"]
    assert world.finish(busy) == [children[0].id]
    world.check_books()


def test_killing_a_parent_frees_the_slots_of_its_children() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1))
    world.services["Caller"] = world.services["Greeter"].__class__(
        name="Caller", type="service", handlers={"run": ""}, deployment_id="dp_a"
    )
    parent = world.start("Caller", "run")
    world.append(
        parent, 1, CallEntry(service="Greeter", handler="greet", invocation_id=child_invocation_id(parent.id, 1))
    )
    waiting = world.send()
    assert world.record(waiting.id).status == "pending"
    _, effects = world.act("kill", parent.id)
    assert world.record(child_invocation_id(parent.id, 1)).status == "completed"
    assert [r.id for r in effects.launch] == [waiting.id]
    world.check_books()


def test_an_exclusive_handler_takes_its_key_lock_first_then_a_slot() -> None:
    world = Limited(Counter=ServiceLimits(handlers={"add": Limit(concurrency=1)}))
    k1 = world.start("Counter", "add", "k1")
    k1_again = world.start("Counter", "add", "k1")  # behind k1's lock
    k2 = world.start("Counter", "add", "k2")  # behind the limit
    assert [world.record(r.id).status for r in (k1, k1_again, k2)] == ["running", "pending", "pending"]
    assert world.place(k2) == 1 and world.place(k1_again) is None
    _, effects, _ = world.settle(world.record(k1.id), DONE)
    # The slot goes to the first in the limit's queue; the key's next then queues for a slot.
    assert [r.id for r in effects.launch] == [k2.id]
    assert world.record(k1_again.id).flow_wait != "" and world.place(k1_again) == 1
    world.check_books()


# -- rate -------------------------------------------------------------------------------------------


def test_a_rate_limit_spreads_a_burst_over_timers_and_drops_nothing() -> None:
    world = Limited(Greeter=greet_limit(rate=2, period_ms=1000))
    sent = [world.send() for _ in range(5)]
    records = [world.record(r.id) for r in sent]
    assert [r.status for r in records] == ["running", "running", "scheduled", "scheduled", "scheduled"]
    assert [r.scheduled_at_ms - NOW for r in records[2:]] == [500, 1000, 1500]
    effects, _ = world.fire_due(NOW + 500)
    assert [r.id for r in effects.launch] == [sent[2].id]
    effects, _ = world.fire_due(NOW + 1500)
    assert [r.id for r in effects.launch] == [sent[3].id, sent[4].id]


def test_the_bucket_is_durable_a_new_machine_over_the_same_store_sees_it() -> None:
    world = Limited(Greeter=greet_limit(rate=1, period_ms=1000))
    world.send()
    world.machine = Machine(limits(), resolver(world.services), limits_of=world.flow.get)  # "a restart"
    assert world.record(world.send().id).scheduled_at_ms == NOW + 1000


def test_a_bucket_refills_with_time() -> None:
    world = Limited(Greeter=greet_limit(rate=2, period_ms=1000, burst=2))
    world.send(), world.send()
    world.now += 1000
    assert world.statuses(world.send(), world.send()) == ["running", "running"]


def test_rate_and_concurrency_hold_together_the_slot_is_held_while_the_start_waits() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1, rate=1, period_ms=1000))
    first = world.send()
    second = world.send()
    assert world.statuses(first, second) == ["running", "pending"]
    world.finish(first)
    held = world.record(second.id)
    assert held.status == "scheduled" and held.scheduled_at_ms == NOW + 1000 and held.flow_slots
    third = world.send()
    assert world.record(third.id).status == "pending"  # the slot is the waiting one's
    world.check_books()
    effects, _ = world.fire_due(NOW + 1000)
    assert [r.id for r in effects.launch] == [second.id]
    world.check_books()


def test_cancelling_a_start_a_rate_limit_put_off_frees_its_slot() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1, rate=1, period_ms=1000))
    world.finish(world.send())
    waiting = world.send()  # scheduled by the rate, holding the slot
    queued = world.send()
    world.act("cancel", waiting.id)
    record = world.record(queued.id)
    assert record.status == "scheduled" and record.flow_slots  # it got the slot, then waits for the rate
    effects, _ = world.fire_due(NOW + 10_000)
    assert [r.id for r in effects.launch] == [queued.id]
    world.check_books()


# -- run-time limits --------------------------------------------------------------------------------


def test_an_operator_override_replaces_the_code_limits_and_starts_what_it_lets_go() -> None:
    world = Limited(Greeter=greet_limit(concurrency=1))
    world.services["Greeter"] = msgspec.structs.replace(world.services["Greeter"], limits=greet_limit(concurrency=1))
    world.write(lambda txn: world.machine.register(txn, DEPLOYMENT, [world.services["Greeter"]]))
    sent = [world.send() for _ in range(4)]
    wider = greet_limit(concurrency=3)
    applied, effects = world.write(lambda txn: world.machine.set_limits(txn, "Greeter", wider, now=world.now))
    assert applied == wider and [r.id for r in effects.launch] == [sent[1].id, sent[2].id]
    world.flow["Greeter"] = wider  # the registry's cache, after the commit
    assert world.read(lambda txn: world.machine.limit_override(txn, "Greeter")) == wider
    world.check_books()
    back, _ = world.write(lambda txn: world.machine.set_limits(txn, "Greeter", None, now=world.now))
    assert back == greet_limit(concurrency=1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (ServiceLimits(handlers={"nope": Limit(concurrency=1)}), "unknown handler 'nope'"),
        (ServiceLimits(handler_keys={"nope": Limit(concurrency=1)}), "unknown handler 'nope'"),
        (ServiceLimits(key_fields={"nope": "tenant"}), "unknown handler 'nope'"),
    ],
)
def test_a_bad_override_is_refused_and_changes_nothing(override: ServiceLimits, message: str) -> None:
    world = Limited()
    world.write(lambda txn: world.machine.register(txn, DEPLOYMENT, [world.services["Greeter"]]))
    with pytest.raises(BadRequest, match=message):
        world.write(lambda txn: world.machine.set_limits(txn, "Greeter", override, now=world.now))
    assert world.keys("limits") == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"concurrency": -1}, "0 \\(no limit\\) or more"),
        ({"rate": -2}, "0 \\(no limit\\) or more"),
        ({"rate": 1, "period_ms": 0}, "period_ms"),
    ],
)
def test_a_limit_that_cannot_apply_cannot_be_made_nor_decoded(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limit(**fields)
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(msgspec.json.encode(fields), type=Limit)


def test_limits_of_an_unknown_service_are_not_found() -> None:
    world = Limited()
    with pytest.raises(NotFound):
        world.write(lambda txn: world.machine.set_limits(txn, "Nope", None, now=world.now))


def test_a_random_mix_of_starts_and_ends_never_breaks_the_books() -> None:
    import random

    rng = random.Random(16)
    world = Limited(
        Greeter=ServiceLimits(
            service=Limit(concurrency=3),
            handlers={"greet": Limit(concurrency=2)},
            handler_keys={"greet": Limit(concurrency=1)},
        )
    )
    live: list[InvocationRecord] = []
    for _ in range(300):
        roll = rng.random()
        if roll < 0.45 or not live:
            live.append(world.send(rng.choice(["greet", "shout"]), limit_key=rng.choice(["", "a", "b"])))
        else:
            record = world.record(rng.choice(live).id)
            if record.status == "running" and roll < 0.8:
                world.settle(record, DONE)
            elif not record.is_completed:
                world.act(rng.choice(["kill", "cancel"]), record.id)
                if world.record(record.id).status == "running":
                    world.settle(world.record(record.id), DONE)
        live = [r for r in live if not world.record(r.id).is_completed]
        world.check_books()
    running = world.read(lambda txn: [r for r in world.machine.active(txn) if r.status == "running"])
    assert len(running) <= 3
