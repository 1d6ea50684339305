"""Journal writes inside a write transaction: new entries and their effects, and completions.

A new entry may do more than sit in the journal: a sleep arms a durable timer, a call or a send
creates the child invocation (a workflow's run at most once per key), a state write is applied, a
promise operation waits on, reads or completes the promise, all in the same transaction as the
entry itself, so a crash can
never leave an entry without its effect or the reverse. What must happen after the commit
(send a new attempt, wake the timer loop, answer waiting clients) is collected in `Effects`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping

import msgspec

from durable_core import flow
from durable_core.effects import Effects
from durable_core.errors import BadRequest, Conflict, Fenced, NotFound, PayloadTooLarge
from durable_core.keyed import admit, apply_state, object_hash, promise_key, read_promise, release, write_promise
from durable_core.keys import START_INDEX, expiry_key, invocation_key, journal_key, timer_key
from durable_core.lifecycle import start_attempt
from durable_core.overlap import hold
from durable_core.overlap import release as release_held
from durable_core.pins import pin
from durable_core.records import (
    HandlerKind,
    InvocationRecord,
    PromiseRecord,
    ServiceLimits,
    ServiceRecord,
    ServiceType,
    encode_record,
)
from durable_core.rows import put_record, read_entry, read_record
from durable_core.txn import Txn
from handlers_sdk.ids import legacy_child_invocation_id
from handlers_sdk.protocol import (
    COMPLETABLE,
    NULL,
    AwakeableEntry,
    CallEntry,
    ClearAllStateEntry,
    ClearStateEntry,
    Entry,
    Failure,
    JournalItem,
    PromiseCompleteEntry,
    PromiseGetEntry,
    PromisePeekEntry,
    RunEntry,
    SendEntry,
    SetStateEntry,
    SleepEntry,
    awakeable_id,
    child_invocation_id,
    decode_item,
    encode,
)
from handlers_sdk.replay import header

__all__ = [
    "Resolver",
    "complete_entry",
    "complete_promise",
    "create_invocation",
    "finish",
    "new_seed",
    "new_token",
    "resolve_in",
    "start_or_queue",
    "write_entries",
]

#: Finds (deployment id, handler kind, service type) of service/handler; NotFound if unknown.
Resolver = Callable[[str, str], tuple[str, HandlerKind, ServiceType]]


def resolve_in(
    services: Mapping[str, ServiceRecord], service: str, handler: str
) -> tuple[str, HandlerKind, ServiceType]:
    """A `Resolver` over a table of services: (deployment id, handler kind, service type).

    Raises:
        NotFound: no such service, or no such handler in it.
    """
    svc = services.get(service)
    if svc is None:
        raise NotFound(f"service '{service}' not found")
    kind = svc.handlers.get(handler)
    if kind is None:
        raise NotFound(f"handler '{service}/{handler}' not found")
    return svc.deployment_id, kind, svc.type


def new_token() -> str:
    """An unguessable attempt token."""
    return secrets.token_urlsafe(16)


def new_seed() -> int:
    """The random seed of a new invocation (``ctx.random()``)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def finish(
    txn: Txn, record: InvocationRecord, now: int, effects: Effects, limits_of: flow.LimitsOf = flow.no_limits
) -> None:
    """Store a just-completed invocation with everything completion implies: the retention
    index, deleting its pending sleep timers, waking its waiters, freeing its concurrency slots
    and releasing its key's lock (admitting the next in line of each), and completing its
    parent's call entry."""
    record = flow.release(txn, record, now, limits_of, effects, new_token)
    put_record(txn, record)
    txn.put("expiry", expiry_key(record.expires_ms, record.id), b"")
    for due_ms, index in record.timers:
        txn.delete("timers", timer_key(due_ms, record.id, index))
    for name, index in record.promise_waits:
        txn.delete("promise_waiters", promise_key(record.service, record.key, name) + journal_key(record.id, index))
    effects.finished(record)
    limits = limits_of(record.service)
    admitted = release(txn, record, now, new_token(), limits)
    if admitted is not None:
        put_record(txn, admitted)
        flow.announce(admitted, effects)
    release_held(txn, record, now, new_token(), effects, limits)
    if record.parent_id:
        try:
            complete_entry(
                txn, record.parent_id, record.parent_index, now=now, effects=effects,
                value=record.result, failure=record.failure,
            )  # fmt: skip
        except (NotFound, Conflict, BadRequest):
            # The parent was purged, or killed and its entry completed already: nothing to do.
            pass


def create_invocation(
    txn: Txn,
    record: InvocationRecord,
    body: bytes,
    effects: Effects,
    start_at_ms: int = 0,
    held_behind: str = "",
    limits_of: flow.LimitsOf = flow.no_limits,
) -> InvocationRecord:
    """Write a new invocation (attempt 0): admitted at once (running, pending behind its key's
    lock or in a limit's queue, or scheduled by a rate limit), scheduled for `start_at_ms`, or
    held until the invocation `held_behind` completes."""
    key = invocation_key(record.id)
    limits = limits_of(record.service)
    if limits is not None:
        record = flow.with_limit_key(record, body, limits)
    if held_behind:
        record = hold(txn, record, held_behind, record.modified_ms)
    elif start_at_ms:
        record = msgspec.structs.replace(record, status="scheduled", token="", scheduled_at_ms=start_at_ms)
        txn.put("timers", timer_key(start_at_ms, record.id, START_INDEX), b"")
        effects.arm(start_at_ms)
    else:
        record = start_or_queue(txn, record, record.modified_ms, effects, limits)
    txn.put("invocations", key, encode_record(record))
    txn.put("inputs", key, body or b"null")
    txn.put("active", key, b"")
    pin(txn, record)
    return record


def start_or_queue(
    txn: Txn, record: InvocationRecord, now: int, effects: Effects, limits: ServiceLimits | None = None
) -> InvocationRecord:
    """Admit `record` within its service's `limits` (see `keyed.admit`); a started one is queued
    in `effects` for sending, one a rate limit scheduled arms the timer loop."""
    record = admit(txn, record, now, new_token(), limits)
    flow.announce(record, effects)
    return record


def _child(
    txn: Txn, parent: InvocationRecord, entry: CallEntry | SendEntry, index: int, resolve: Resolver, now: int,
    effects: Effects, seed: Callable[[], int], limits_of: flow.LimitsOf,
) -> Failure | None:  # fmt: skip
    """Create the child invocation of a call or send entry; a Failure if its target is unknown."""
    # The rule of SDKs before Restate's id format too: an SDK not upgraded yet keeps working.
    if entry.invocation_id not in (child_invocation_id(parent.id, index), legacy_child_invocation_id(parent.id, index)):
        raise BadRequest(f"entry {index}: child id must be child_invocation_id(parent, index)")
    try:
        deployment, kind, service_type = resolve(entry.service, entry.handler)
    except NotFound as exc:
        return Failure(code=404, message=exc.message)
    keyed = service_type != "service"
    if keyed and not entry.key:
        return Failure(code=400, message=f"{entry.service} is a keyed {service_type}: a key is required")
    is_call = isinstance(entry, CallEntry)
    if kind == "workflow":
        # A workflow's run happens once per key, whoever asks for it.
        workflow = object_hash(entry.service, entry.key)
        if txn.get("workflows", workflow) is not None:
            if is_call:
                return Failure(code=409, message=f"workflow '{entry.service}/{entry.key}' was already run")
            return None  # a repeated one-way send of a run is a no-op
        txn.put("workflows", workflow, entry.invocation_id.encode("ascii"))
    record = InvocationRecord(
        id=entry.invocation_id,
        service=entry.service,
        handler=entry.handler,
        key=entry.key if keyed else "",
        status="pending",
        created_ms=now,
        modified_ms=now,
        deployment_id=deployment,
        random_seed=seed(),
        parent_id=parent.id if is_call else "",
        parent_index=index if is_call else 0,
        kind=kind,
        keyed=keyed,
    )
    delay = entry.delay_ms if isinstance(entry, SendEntry) else 0
    create_invocation(
        txn, record, bytes(entry.input), effects, start_at_ms=now + delay if delay else 0, limits_of=limits_of
    )
    return None


def _same_operation(recorded: Entry, sent: Entry) -> bool:
    """True if `sent` is a re-send of `recorded` (the response to an earlier append was lost).

    A step result must be the very same one: otherwise the handler would go on with a value
    other than the journaled one. Entries the proxy completes later are compared by header only,
    because their stored form changes when they are completed.
    """
    if isinstance(recorded, RunEntry) or isinstance(sent, RunEntry):
        return encode(recorded) == encode(sent)
    return header(recorded) == header(sent)


def write_entries(
    txn: Txn,
    record: InvocationRecord,
    items: list[JournalItem],
    *,
    max_entries: int,
    resolve: Resolver,
    now: int,
    effects: Effects,
    seed: Callable[[], int] = new_seed,
    limits_of: flow.LimitsOf = flow.no_limits,
) -> InvocationRecord:
    """Journal new entries of `record` and apply their effects. Returns the (maybe updated) record.

    An identical re-send of an entry (same operation at the same index) is accepted, so a lost
    ack response can be retried; another operation at a taken index is fenced. `seed` gives the
    random seed of each child invocation a call or send creates.
    """
    for item in items:
        index, entry = item.index, item.entry
        if index >= max_entries or index == START_INDEX:
            raise PayloadTooLarge(f"journal of {record.id} is full ({max_entries} entries)")
        key = journal_key(record.id, index)
        existing = txn.get("journal", key)
        if existing is not None:
            if _same_operation(decode_item(existing).entry, entry):
                continue
            raise Fenced(f"journal index {index} of {record.id} is already taken")
        if isinstance(entry, SleepEntry):
            entry = msgspec.structs.replace(entry, completed=False, seq=0)
            txn.put("timers", timer_key(entry.wake_at_ms, record.id, index), b"")
            record = msgspec.structs.replace(record, timers=[*record.timers, (entry.wake_at_ms, index)])
            effects.arm(entry.wake_at_ms)
        elif isinstance(entry, CallEntry):
            entry = msgspec.structs.replace(entry, completed=False, value=NULL, failure=None, seq=0)
            failure = _child(txn, record, entry, index, resolve, now, effects, seed, limits_of)
            if failure is not None:
                # An unknown callee fails the call at once, as a terminal error in the caller.
                seq = record.completion_seq + 1
                record = msgspec.structs.replace(record, completion_seq=seq)
                entry = msgspec.structs.replace(entry, completed=True, failure=failure, seq=seq)
        elif isinstance(entry, SendEntry):
            failure = _child(txn, record, entry, index, resolve, now, effects, seed, limits_of)
            if failure is not None:
                # As the same call would get it: 400 for a keyed target without a key, else 404.
                refusal = BadRequest if failure.code == 400 else NotFound
                raise refusal(f"send to {entry.service}/{entry.handler}: {failure.message}")
        elif isinstance(entry, AwakeableEntry):
            if entry.id != awakeable_id(record.id, index):
                raise BadRequest(f"entry {index}: awakeable id must be awakeable_id(invocation, index)")
            entry = msgspec.structs.replace(entry, completed=False, value=NULL, failure=None, seq=0)
        elif isinstance(entry, SetStateEntry | ClearStateEntry | ClearAllStateEntry):
            apply_state(txn, record, entry)
        elif isinstance(entry, PromiseGetEntry | PromisePeekEntry | PromiseCompleteEntry):
            if resolve(record.service, record.handler)[2] != "workflow":
                raise BadRequest("durable promises exist only in workflows")
            entry, record = _promise_entry(txn, record, index, entry, now, effects)
        txn.put("journal", key, encode(JournalItem(index=index, entry=entry)))
    return record


def _promise_entry(
    txn: Txn,
    record: InvocationRecord,
    index: int,
    entry: PromiseGetEntry | PromisePeekEntry | PromiseCompleteEntry,
    now: int,
    effects: Effects,
) -> tuple[Entry, InvocationRecord]:
    """Journal a promise operation: wait on it, peek at it, or complete it and wake its waiters."""
    if not record.keyed:
        raise BadRequest("durable promises exist only in workflows")
    promise = read_promise(txn, record.service, record.key, entry.name)
    if isinstance(entry, PromiseGetEntry):
        if promise is None or not promise.completed:
            waiter = promise_key(record.service, record.key, entry.name) + journal_key(record.id, index)
            txn.put("promise_waiters", waiter, b"")
            # Waiting because the promise is not completed: write its row (a pending one if there is
            # none), so that a completion racing this, which finds no waiter yet, conflicts with it.
            write_promise(txn, record.service, record.key, promise or PromiseRecord(name=entry.name))
            waits = [*record.promise_waits, (entry.name, index)]
            return msgspec.structs.replace(entry, completed=False, seq=0), msgspec.structs.replace(
                record, promise_waits=waits
            )
        seq = record.completion_seq + 1
        raw = msgspec.Raw(promise.value) if promise.value is not None else NULL
        done = msgspec.structs.replace(entry, completed=True, seq=seq, value=raw, failure=promise.failure)
        return done, msgspec.structs.replace(record, completion_seq=seq)
    seq = record.completion_seq + 1
    record = msgspec.structs.replace(record, completion_seq=seq)
    if isinstance(entry, PromisePeekEntry):
        found = promise is not None and promise.completed
        raw = msgspec.Raw(promise.value) if found and promise and promise.value is not None else NULL
        failure = promise.failure if found and promise else None
        return msgspec.structs.replace(entry, completed=True, seq=seq, found=found, value=raw, failure=failure), record
    value = bytes(entry.resolution) if entry.rejection is None else None
    # Waiters may include this very invocation: store it first and read it back afterwards.
    put_record(txn, record)
    if not complete_promise(
        txn, record.service, record.key, entry.name, now=now, effects=effects, value=value, failure=entry.rejection
    ):
        failure = Failure(code=409, message=f"promise '{entry.name}' is already completed")
        return msgspec.structs.replace(entry, completed=True, seq=seq, value=NULL, failure=failure), record
    updated = read_record(txn, record.id)
    assert updated is not None
    return msgspec.structs.replace(entry, completed=True, seq=seq, value=NULL, failure=None), updated


def complete_promise(
    txn: Txn,
    service: str,
    key: str,
    name: str,
    *,
    now: int,
    effects: Effects,
    value: bytes | None = None,
    failure: Failure | None = None,
) -> bool:
    """Resolve (`value`, JSON) or reject (`failure`) the durable promise `name` of a workflow key
    and complete every entry waiting on it (a suspended waiter's next attempt is queued in
    `effects`). A promise completes once: returns False, changing nothing, if it already has.
    """
    promise = read_promise(txn, service, key, name)
    if promise is not None and promise.completed:
        return False
    value = value if failure is None else None
    write_promise(txn, service, key, PromiseRecord(name=name, completed=True, value=value, failure=failure))
    prefix = promise_key(service, key, name)
    for waiter, _ in list(txn.items_with_prefix("promise_waiters", prefix)):
        txn.delete("promise_waiters", waiter)
        waiter_id, waiter_index = waiter[len(prefix) : -5].decode("ascii"), int.from_bytes(waiter[-4:], "big")
        try:
            complete_entry(txn, waiter_id, waiter_index, now=now, effects=effects, value=value, failure=failure)
        except (NotFound, Conflict):
            continue
    return True


def complete_entry(
    txn: Txn,
    invocation_id: str,
    index: int,
    *,
    now: int,
    effects: Effects,
    value: bytes | None = None,
    failure: Failure | None = None,
    kinds: tuple[type, ...] = (SleepEntry, CallEntry, AwakeableEntry, PromiseGetEntry),
) -> None:
    """Complete the entry at `index` (a timer fired, a child finished, an awakeable was resolved).

    If the invocation is suspended waiting on this entry, its next attempt is committed here and
    queued in `effects` for sending.

    Raises:
        NotFound: no such invocation or entry.
        Conflict: the entry is already completed.
        BadRequest: the entry is not of one of `kinds`.
    """
    record = read_record(txn, invocation_id)
    entry = read_entry(txn, invocation_id, index) if record is not None else None
    if record is None or entry is None:
        raise NotFound(f"no entry {index} in invocation {invocation_id}")
    if record.is_completed:
        # Its journal is final: a late completion (a child outliving a killed parent) is moot.
        raise Conflict(f"invocation {invocation_id} has already completed")
    if not isinstance(entry, kinds) or not isinstance(entry, COMPLETABLE):
        raise BadRequest(f"entry {index} of {invocation_id} is a {type(entry).__name__}")
    if entry.completed:
        raise Conflict(f"entry {index} of {invocation_id} is already completed")
    seq = record.completion_seq + 1
    if isinstance(entry, SleepEntry):
        completed: Entry = msgspec.structs.replace(entry, completed=True, seq=seq)
    else:
        raw = msgspec.Raw(value) if value is not None else NULL
        completed = msgspec.structs.replace(entry, completed=True, seq=seq, value=raw, failure=failure)
    txn.put("journal", journal_key(invocation_id, index), encode(JournalItem(index=index, entry=completed)))
    timers = [t for t in record.timers if t[1] != index] if isinstance(entry, SleepEntry) else record.timers
    waits = (
        [w for w in record.promise_waits if w[1] != index]
        if isinstance(entry, PromiseGetEntry)
        else record.promise_waits
    )
    record = msgspec.structs.replace(record, completion_seq=seq, timers=timers, promise_waits=waits)
    if record.status == "suspended" and index in record.waiting_on:
        record = start_attempt(record, new_token(), now)
        effects.start(record)
    put_record(txn, record)
