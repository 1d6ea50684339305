"""What `MemoryStore` adds to the conformance suite: the refusals it shares with LMDB but
reports with its own exception types (so they cannot be written once for every backend)."""

from __future__ import annotations

import pytest

from durable_core.memory import MAX_KEY_BYTES, MemoryStore


@pytest.mark.parametrize(
    "key",
    [pytest.param(b"", id="empty"), pytest.param(b"k" * (MAX_KEY_BYTES + 1), id="over-511-bytes")],
)
def test_keys_lmdb_refuses_are_refused(key: bytes) -> None:
    """An empty key or one over LMDB's 511-byte limit is a ValueError, as LMDB refuses both."""
    store = MemoryStore()
    txn = store.begin()
    with pytest.raises(ValueError, match="key"):
        txn.put("journal", key, b"v")
    txn.put("journal", b"k" * MAX_KEY_BYTES, b"v")
    txn.commit()


def test_one_write_transaction_at_a_time() -> None:
    """A second `begin` while a write is open raises (LMDB would block), also after one of its
    children ended; ending the write itself frees the slot."""
    store = MemoryStore()
    txn = store.begin()
    with pytest.raises(RuntimeError, match="already open"):
        store.begin()
    txn.child().abort()
    txn.child().commit()
    with pytest.raises(RuntimeError, match="already open"):
        store.begin()  # ending a child does not end the write transaction
    txn.abort()
    store.begin().commit()
    assert store.commits == 1


def test_an_ended_transaction_refuses_writes_and_abort_is_idempotent() -> None:
    """Writes after `commit` raise instead of being silently lost; aborting twice is harmless."""
    store = MemoryStore()
    txn = store.begin()
    txn.commit()
    with pytest.raises(RuntimeError, match="ended"):
        txn.put("journal", b"k", b"v")
    txn = store.begin()
    txn.abort()
    txn.abort()
    store.begin().abort()


@pytest.mark.parametrize(("key", "value"), [("k", b"v"), (b"k", "v"), (bytearray(b"k"), b"v")])
def test_keys_and_values_must_be_bytes(key: object, value: object) -> None:
    """Only bytes are stored (LMDB would accept any buffer and hand back bytes)."""
    txn = MemoryStore().begin()
    with pytest.raises(TypeError, match="bytes"):
        txn.put("journal", key, value)  # type: ignore[arg-type]


def test_commits_without_readers_do_not_copy_tables() -> None:
    """Copy-on-write happens only while a reader is open: with none, a commit changes the table
    in place, so commits stay O(changes); with one open, the reader keeps the old table."""
    store = MemoryStore()
    table = store._tables["journal"]
    txn = store.begin()
    txn.put("journal", b"a", b"1")
    txn.commit()
    assert store._tables["journal"] is table
    with store.read() as read:
        txn = store.begin()
        txn.put("journal", b"b", b"2")
        txn.commit()
        assert store._tables["journal"] is not table
        assert read.count("journal") == 1
    assert store._readers == 0
