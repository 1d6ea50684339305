"""Journal writes inside a write transaction: new entries and their effects, and completions.

A new entry may do more than sit in the journal: a sleep arms a durable timer, a call or a send
creates the child invocation, all in the same transaction as the entry itself, so a crash can
never leave an entry without its effect or the reverse. What must happen after the commit
(send a new attempt, wake the timer loop, answer waiting clients) is collected in `Effects`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import cast

import msgspec

from handlers_sdk.protocol import (
    NULL,
    AwakeableEntry,
    CallEntry,
    Entry,
    Failure,
    JournalItem,
    RunEntry,
    SendEntry,
    SleepEntry,
    awakeable_id,
    child_invocation_id,
    encode,
)
from handlers_sdk.replay import header
from proxy.errors import BadRequest, Conflict, Fenced, NotFound, PayloadTooLarge
from proxy.journal import InvocationRecord, decode_record, encode_record, start_attempt
from proxy.keys import START_INDEX, invocation_key, journal_key, timer_key
from proxy.writer import Txn

__all__ = [
    "Effects",
    "Resolver",
    "complete_entry",
    "create_invocation",
    "new_token",
    "put_record",
    "read_entry",
    "read_record",
    "write_entries",
]

#: Finds the deployment serving service/handler; raises NotFound when there is none.
Resolver = Callable[[str, str], str]

_item_decoder = msgspec.json.Decoder(JournalItem)


def new_token() -> str:
    """An unguessable attempt token."""
    return secrets.token_urlsafe(16)


def new_seed() -> int:
    """The random seed of a new invocation (``ctx.random()``)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


class Effects:
    """What a committed transaction asks the runtime to do next."""

    __slots__ = ("completed", "launch", "wake_at")

    def __init__(self) -> None:
        self.launch: list[InvocationRecord] = []
        self.completed: list[InvocationRecord] = []
        self.wake_at: int | None = None

    def arm(self, due_ms: int) -> None:
        """A timer due at `due_ms` was written."""
        self.wake_at = due_ms if self.wake_at is None else min(self.wake_at, due_ms)


def read_record(txn: Txn, invocation_id: str) -> InvocationRecord | None:
    """The stored record of an invocation, as the write transaction sees it."""
    data = txn.get("invocations", invocation_key(invocation_id))
    if data is None:
        return None
    return cast(InvocationRecord, decode_record(data, InvocationRecord))


def put_record(txn: Txn, record: InvocationRecord) -> None:
    """Store a record (and keep the `active` index in step with its status)."""
    key = invocation_key(record.id)
    txn.put("invocations", key, encode_record(record))
    if record.is_completed:
        txn.delete("active", key)


def read_entry(txn: Txn, invocation_id: str, index: int) -> Entry | None:
    """The journal entry at `index`, or None."""
    data = txn.get("journal", journal_key(invocation_id, index))
    return None if data is None else _item_decoder.decode(data).entry


def create_invocation(
    txn: Txn, record: InvocationRecord, body: bytes, effects: Effects, start_at_ms: int = 0
) -> InvocationRecord:
    """Write a new invocation: running at once (its first attempt committed), or scheduled."""
    key = invocation_key(record.id)
    if start_at_ms:
        record = msgspec.structs.replace(record, status="scheduled", attempt=0, token="", scheduled_at_ms=start_at_ms)
        txn.put("timers", timer_key(start_at_ms, record.id, START_INDEX), b"")
        effects.arm(start_at_ms)
    else:
        effects.launch.append(record)
    txn.put("invocations", key, encode_record(record))
    txn.put("inputs", key, body or b"null")
    txn.put("active", key, b"")
    return record


def _child(
    txn: Txn, parent: InvocationRecord, entry: CallEntry | SendEntry, index: int, resolve: Resolver, now: int,
    effects: Effects,
) -> Failure | None:  # fmt: skip
    """Create the child invocation of a call or send entry; a Failure if its target is unknown."""
    if entry.invocation_id != child_invocation_id(parent.id, index):
        raise BadRequest(f"entry {index}: child id must be child_invocation_id(parent, index)")
    try:
        deployment = resolve(entry.service, entry.handler)
    except NotFound as exc:
        return Failure(code=404, message=exc.message)
    is_call = isinstance(entry, CallEntry)
    record = InvocationRecord(
        id=entry.invocation_id,
        service=entry.service,
        handler=entry.handler,
        key=entry.key,
        created_ms=now,
        modified_ms=now,
        deployment_id=deployment,
        attempt=1,
        token=new_token(),
        random_seed=new_seed(),
        parent_id=parent.id if is_call else "",
        parent_index=index if is_call else 0,
    )
    delay = entry.delay_ms if isinstance(entry, SendEntry) else 0
    create_invocation(txn, record, bytes(entry.input), effects, start_at_ms=now + delay if delay else 0)
    return None


def write_entries(
    txn: Txn,
    record: InvocationRecord,
    items: list[JournalItem],
    *,
    max_entries: int,
    resolve: Resolver,
    now: int,
    effects: Effects,
) -> InvocationRecord:
    """Journal new entries of `record` and apply their effects. Returns the (maybe updated) record.

    An identical re-send of an entry (same operation at the same index) is accepted, so a lost
    ack response can be retried; another operation at a taken index is fenced.
    """
    for item in items:
        index, entry = item.index, item.entry
        if index >= max_entries or index == START_INDEX:
            raise PayloadTooLarge(f"journal of {record.id} is full ({max_entries} entries)")
        key = journal_key(record.id, index)
        existing = txn.get("journal", key)
        if existing is not None:
            if header(_item_decoder.decode(existing).entry) == header(entry):
                continue
            raise Fenced(f"journal index {index} of {record.id} is already taken")
        if isinstance(entry, SleepEntry):
            entry = msgspec.structs.replace(entry, completed=False, seq=0)
            txn.put("timers", timer_key(entry.wake_at_ms, record.id, index), b"")
            effects.arm(entry.wake_at_ms)
        elif isinstance(entry, CallEntry):
            entry = msgspec.structs.replace(entry, completed=False, value=NULL, failure=None, seq=0)
            failure = _child(txn, record, entry, index, resolve, now, effects)
            if failure is not None:
                # An unknown callee fails the call at once, as a terminal error in the caller.
                seq = record.completion_seq + 1
                record = msgspec.structs.replace(record, completion_seq=seq)
                entry = msgspec.structs.replace(entry, completed=True, failure=failure, seq=seq)
        elif isinstance(entry, SendEntry):
            failure = _child(txn, record, entry, index, resolve, now, effects)
            if failure is not None:
                raise NotFound(f"send to {entry.service}/{entry.handler}: {failure.message}")
        elif isinstance(entry, AwakeableEntry):
            if entry.id != awakeable_id(record.id, index):
                raise BadRequest(f"entry {index}: awakeable id must be awakeable_id(invocation, index)")
            entry = msgspec.structs.replace(entry, completed=False, value=NULL, failure=None, seq=0)
        txn.put("journal", key, encode(JournalItem(index=index, entry=entry)))
    return record


def complete_entry(
    txn: Txn,
    invocation_id: str,
    index: int,
    *,
    now: int,
    effects: Effects,
    value: bytes | None = None,
    failure: Failure | None = None,
    kinds: tuple[type, ...] = (SleepEntry, CallEntry, AwakeableEntry),
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
    if not isinstance(entry, kinds) or isinstance(entry, RunEntry | SendEntry):
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
    record = msgspec.structs.replace(record, completion_seq=seq)
    if record.status == "suspended" and index in record.waiting_on:
        record = start_attempt(record, new_token(), now)
        effects.launch.append(record)
    put_record(txn, record)


def is_completed(txn: Txn, invocation_id: str, index: int) -> bool:
    """True if the entry at `index` exists and has been completed by the proxy."""
    entry = read_entry(txn, invocation_id, index)
    return isinstance(entry, SleepEntry | CallEntry | AwakeableEntry) and entry.completed
