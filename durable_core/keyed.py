"""Keyed services inside a write transaction: per-key locks and inboxes, state, workflow runs
and durable promises.

Exclusive handlers of a virtual object (and a workflow's run handler) hold their key's lock from
admission to completion; later ones wait in the key's inbox in arrival order and are admitted
by the completion that releases the lock, in the same transaction. A state write is a journal
entry and is applied to the ``state`` database in the transaction that journals it, so a state
change never exists without its entry (nor the reverse) and a replay never applies it twice.

State rows are keyed by a hash of the key, so ``state_keys`` keeps the plain (service, key) of
every key with state, written with its state rows and removed with the last of them. Listings
of all state (the admin API's SQL ``state`` table) read it: once every invocation of a key is
purged, no other row holds the key.
"""

from __future__ import annotations

import hashlib
import struct

import msgspec

from durable_core import flow
from durable_core.errors import BadRequest
from durable_core.records import HandlerKind, InvocationRecord, PromiseRecord, ServiceLimits
from durable_core.rows import read_record
from durable_core.txn import ReadTxn, Txn
from handlers_sdk.protocol import ClearAllStateEntry, ClearStateEntry, Entry, SetStateEntry

__all__ = [
    "LOCKING_KINDS",
    "admit",
    "apply_state",
    "clear_state",
    "object_hash",
    "promise_key",
    "read_promise",
    "read_promises",
    "read_state",
    "read_state_keys",
    "release",
    "replace_state",
    "state_key",
    "write_promise",
]

#: Handler kinds that run one at a time per key.
LOCKING_KINDS: frozenset[HandlerKind] = frozenset({"exclusive", "workflow"})
_BE64 = struct.Struct(">Q")
_INBOX_SEQ = b"inbox_seq"
_state_row = msgspec.msgpack.Decoder(tuple[str, bytes])
_state_owner = msgspec.msgpack.Decoder(tuple[str, str])
_encoder = msgspec.msgpack.Encoder()


_promise = msgspec.msgpack.Decoder(PromiseRecord)


def object_hash(service: str, key: str) -> bytes:
    """The 32-byte id of an object or workflow key (user keys may exceed LMDB's key limit)."""
    return hashlib.sha256(f"{service}\x00{key}".encode("utf-8", "surrogatepass")).digest()


def _name_hash(name: str) -> bytes:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:16]


def state_key(service: str, key: str, name: str) -> bytes:
    """Row key of one state entry (the name itself is kept in the value)."""
    return object_hash(service, key) + _name_hash(name)


def promise_key(service: str, key: str, name: str) -> bytes:
    """Row key of a durable promise."""
    return object_hash(service, key) + _name_hash(name)


def admit(
    txn: Txn, record: InvocationRecord, now: int, token: str, limits: ServiceLimits | None = None
) -> InvocationRecord:
    """Start `record` now, or queue it behind the holder of its key's lock, then within its
    service's `limits` (`flow.start`: the lock is taken first, so a key's order is kept).

    Returns the record as written: ``running`` with its first attempt committed, ``pending``, or
    ``scheduled`` by a rate limit.
    """
    if record.kind in LOCKING_KINDS:
        lock = object_hash(record.service, record.key)
        holder = txn.get("locks", lock)
        if holder is not None and holder.decode("ascii") != record.id:
            # Queued on the strength of the lock row: write it, so that a release racing this
            # (it frees the lock when it finds the inbox empty) conflicts with it (`rows.touch`).
            txn.put("locks", lock, holder)
            raw_seq = txn.get("meta", _INBOX_SEQ)
            seq = (_BE64.unpack(raw_seq)[0] if raw_seq else 0) + 1
            txn.put("meta", _INBOX_SEQ, _BE64.pack(seq))
            txn.put("inbox", lock + _BE64.pack(seq), record.id.encode("ascii"))
            return msgspec.structs.replace(record, status="pending", token="", modified_ms=now)
        txn.put("locks", lock, record.id.encode("ascii"))
    return flow.start(txn, record, now, token, limits)


def release(
    txn: Txn, record: InvocationRecord, now: int, token: str, limits: ServiceLimits | None = None
) -> InvocationRecord | None:
    """Release the key lock held by the ended `record`; returns the next invocation, admitted
    within `limits` (running, pending in a limit's queue or scheduled by a rate limit)."""
    if record.kind not in LOCKING_KINDS:
        return None
    lock = object_hash(record.service, record.key)
    holder = txn.get("locks", lock)
    if holder is None or holder.decode("ascii") != record.id:
        return None
    while True:
        next_key = _first_with_prefix(txn, "inbox", lock)
        if next_key is None:
            txn.delete("locks", lock)
            return None
        next_id = (txn.get("inbox", next_key) or b"").decode("ascii")
        txn.delete("inbox", next_key)
        queued = read_record(txn, next_id)
        if queued is not None and queued.status == "pending":
            txn.put("locks", lock, next_id.encode("ascii"))
            return flow.start(txn, queued, now, token, limits)


def _first_with_prefix(txn: Txn, db: str, prefix: bytes) -> bytes | None:
    for key, _ in txn.items_with_prefix(db, prefix):
        return key
    return None


def read_state(txn: ReadTxn, service: str, key: str) -> dict[str, bytes]:
    """Every state entry of an object or workflow key: name -> JSON value."""
    state: dict[str, bytes] = {}
    for _, value in txn.items_with_prefix("state", object_hash(service, key)):
        name, raw = _state_row.decode(value)
        state[name] = raw
    return state


def read_state_keys(txn: ReadTxn, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """At most `limit` (service, key) pairs of keys with state, in hash order, and whether there
    were more. Data written before ``state_keys`` existed has no rows there."""
    keys: list[tuple[str, str]] = []
    for _, value in txn.items_from("state_keys", b""):
        if len(keys) == limit:
            return keys, True
        keys.append(_state_owner.decode(value))
    return keys, False


def _mark_state(txn: Txn, service: str, key: str) -> None:
    # A plain put, idempotent: every state write repeats it rather than read first whether the
    # key had state before.
    txn.put("state_keys", object_hash(service, key), _encoder.encode((service, key)))


def clear_state(txn: Txn, service: str, key: str) -> None:
    """Delete every state entry of a key, and its ``state_keys`` row."""
    owner = object_hash(service, key)
    txn.delete_prefix("state", owner)
    txn.delete("state_keys", owner)


def replace_state(txn: Txn, service: str, key: str, state: dict[str, bytes]) -> None:
    """Replace the whole state of a key (the admin API's edit)."""
    clear_state(txn, service, key)
    for name, raw in state.items():
        txn.put("state", state_key(service, key, name), _encoder.encode((name, raw)))
    if state:
        _mark_state(txn, service, key)


def apply_state(txn: Txn, record: InvocationRecord, entry: Entry) -> None:
    """Apply one journaled state write of `record` (which must hold its key's lock)."""
    if record.kind not in LOCKING_KINDS:
        raise BadRequest(f"{record.service}/{record.handler} is {record.kind or 'a service'}: it cannot write state")
    if isinstance(entry, SetStateEntry):
        row = _encoder.encode((entry.key, bytes(entry.value)))
        txn.put("state", state_key(record.service, record.key, entry.key), row)
        _mark_state(txn, record.service, record.key)
    elif isinstance(entry, ClearStateEntry):
        owner = object_hash(record.service, record.key)
        txn.delete("state", owner + _name_hash(entry.key))
        if _first_with_prefix(txn, "state", owner) is None:  # its last entry: no state left
            txn.delete("state_keys", owner)
    elif isinstance(entry, ClearAllStateEntry):
        clear_state(txn, record.service, record.key)


def read_promise(txn: ReadTxn, service: str, key: str, name: str) -> PromiseRecord | None:
    """A durable promise, or None if nobody has resolved or rejected it yet."""
    data = txn.get("promises", promise_key(service, key, name))
    return None if data is None else _promise.decode(data)


def read_promises(txn: ReadTxn, service: str, key: str) -> list[PromiseRecord]:
    """Every durable promise of a workflow key that has been resolved or rejected."""
    return [_promise.decode(value) for _, value in txn.items_with_prefix("promises", object_hash(service, key))]


def write_promise(txn: Txn, service: str, key: str, promise: PromiseRecord) -> None:
    """Store a durable promise."""
    txn.put("promises", promise_key(service, key, promise.name), _encoder.encode(promise))
