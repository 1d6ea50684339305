"""Typed reads and writes of the rows every rule touches: invocation records and journal entries."""

from __future__ import annotations

from durable_core.keys import invocation_key, journal_key, journal_prefix
from durable_core.pins import unpin
from durable_core.records import InvocationRecord, decode_record, encode_record
from durable_core.txn import ReadTxn, Txn
from handlers_sdk.protocol import COMPLETABLE, Entry, JournalItem, decode_item

__all__ = [
    "is_completed", "journal_items", "journal_rows", "put_record", "read_entry", "read_input", "read_record", "touch",
]  # fmt: skip


def read_record(txn: ReadTxn, invocation_id: str) -> InvocationRecord | None:
    """The stored record of an invocation (None if unknown, or if the id cannot be one)."""
    if not invocation_id.isascii():
        return None
    data = txn.get("invocations", invocation_key(invocation_id))
    return None if data is None else decode_record(data, InvocationRecord)


def put_record(txn: Txn, record: InvocationRecord) -> None:
    """Store a record (and keep the `active` index in step with its status)."""
    key = invocation_key(record.id)
    txn.put("invocations", key, encode_record(record))
    if record.is_completed:
        txn.delete("active", key)
        unpin(txn, record)


def read_input(txn: ReadTxn, invocation_id: str) -> bytes:
    """The request body an invocation was created with (JSON)."""
    return txn.get("inputs", invocation_key(invocation_id)) or b"null"


def read_entry(txn: ReadTxn, invocation_id: str, index: int) -> Entry | None:
    """The journal entry at `index`, or None."""
    data = txn.get("journal", journal_key(invocation_id, index))
    return None if data is None else decode_item(data).entry


def journal_rows(txn: ReadTxn, invocation_id: str) -> list[bytes]:
    """The stored journal items of an invocation (JSON `JournalItem`s), in index order."""
    return [value for _, value in txn.items_with_prefix("journal", journal_prefix(invocation_id))]


def journal_items(txn: ReadTxn, invocation_id: str) -> list[JournalItem]:
    """The journal of an invocation, decoded, in index order."""
    return [decode_item(value) for value in journal_rows(txn, invocation_id)]


def is_completed(txn: ReadTxn, invocation_id: str, index: int) -> bool:
    """True if the entry at `index` exists and has been completed by the proxy."""
    entry = read_entry(txn, invocation_id, index)
    return isinstance(entry, COMPLETABLE) and entry.completed


def touch(txn: Txn, db: str, key: bytes) -> None:
    """Write a row again with its own value (nothing if it is missing).

    For a rule that reads a row, decides from it, and writes only elsewhere: on a store where
    several proxies write at once (PostgreSQL, snapshot isolation: the first writer of a row wins,
    the other transaction runs again), the row it decided from must be one it writes, or a
    concurrent change of that row would go unseen (write skew). On LMDB, a harmless extra put.
    """
    value = txn.get(db, key)
    if value is not None:
        txn.put(db, key, value)
