"""The store seam's contract (`durable_core.txn`), run unchanged against every backend.

Each test takes the `backend` fixture of `conftest.py` and so runs once per backend (LMDB,
memory; a new backend is one more entry there). What is checked is what the state machine
relies on: point reads and writes, bytewise key order (prefixes of other keys, NUL and 0xff
bytes, big-endian integers), ordered scans from a key and by prefix, the reverse scan
(`items_before`), `delete_prefix`, `count`,
the visibility rules of write and read transactions, and nested (`child`) transactions, which
the proxy's group-commit writer uses to discard one request of a batch.

Where the backends differ, and how the suite deals with it:

* Snapshot isolation: `ReadTxn` is documented as "a consistent view of the store", so a read
  transaction opened before a commit must not see that commit (nor break in the middle of a
  scan). LMDB gives this by MVCC; `MemoryStore` used to hand out a live view of its tables (a
  later commit showed through, and a scan across a commit that deleted rows raised KeyError):
  fixed there with copy-on-write of the tables a reader holds, and tested here for both.
* Key size: LMDB refuses keys over 511 bytes; `MemoryStore` now refuses them too (tested in
  `test_memory.py`, since the two raise different exception types). Here both must accept a
  511-byte key.
* Only one write transaction at a time: LMDB blocks a second `begin` (from the same thread it
  would deadlock), `MemoryStore` raises. Not tested here; the suite only checks that a new
  write transaction can begin once the previous one committed or aborted.
* A transaction used after it ended, or a scan held across a write to the same database, is
  undefined by the protocol and not tested.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable

import pytest

from durable_core.txn import DBS, Backend, ReadTxn

DB = "journal"
OTHER = "state"
_BE64 = struct.Struct(">Q")

# Keys that order differently under any comparison but the bytewise one: prefixes of each
# other, NUL and 0xff bytes, and 0x7f/0x80 (a signed-char comparison would swap them).
AWKWARD_KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\x00\xff",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"a",
    b"a\x00",
    b"a\x00\x00",
    b"a\x01",
    b"a\xff",
    b"ab",
    b"b",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
]

# Rows for the scan tests: a group under b"a", neighbours either side of it.
# Listed in bytewise order (b"ac" < b"a\xff").
SCAN_KEYS = [b"\x00", b"a", b"a\x00", b"a\x00\x00", b"ab", b"ab\xff", b"ac", b"a\xff", b"b", b"b\x00", b"\xff"]


def _value(key: bytes) -> bytes:
    return b"v:" + key


def commit_rows(backend: Backend, db: str, keys: Iterable[bytes]) -> None:
    """Commit one row per key (value `_value(key)`), in the order given."""
    txn = backend.begin()
    for key in keys:
        txn.put(db, key, _value(key))
    txn.commit()


def rows(txn: ReadTxn, db: str) -> list[tuple[bytes, bytes]]:
    """Every row of `db` as `txn` sees it, in key order."""
    return list(txn.items_from(db, b""))


def committed(backend: Backend, db: str = DB) -> list[tuple[bytes, bytes]]:
    """Every committed row of `db`, read in a fresh read transaction."""
    with backend.read() as txn:
        return rows(txn, db)


def expected(keys: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
    """The rows of `commit_rows(keys)`, in bytewise key order."""
    return [(key, _value(key)) for key in sorted(set(keys))]


# -- point reads and writes -------------------------------------------------------------------


def test_missing_key_reads_none(backend: Backend) -> None:
    """A key never written reads None, in a read and in a write transaction."""
    with backend.read() as txn:
        assert txn.get(DB, b"nope") is None
    write = backend.begin()
    assert write.get(DB, b"nope") is None
    write.abort()


def test_put_is_visible_after_commit(backend: Backend) -> None:
    """A committed put is read back by a later read transaction."""
    txn = backend.begin()
    txn.put(DB, b"k", b"value")
    txn.commit()
    with backend.read() as read:
        assert read.get(DB, b"k") == b"value"
        assert read.count(DB) == 1


def test_overwrite_replaces_the_value_and_keeps_one_row(backend: Backend) -> None:
    """Putting an existing key replaces its value (committed and within the same transaction)."""
    commit_rows(backend, DB, [b"k"])
    txn = backend.begin()
    txn.put(DB, b"k", b"second")
    assert txn.get(DB, b"k") == b"second"
    txn.put(DB, b"k", b"third")
    assert txn.count(DB) == 1
    txn.commit()
    assert committed(backend) == [(b"k", b"third")]


def test_delete_removes_and_deleting_a_missing_key_is_a_no_op(backend: Backend) -> None:
    """`delete` removes a committed row; deleting an absent key changes nothing and does not raise."""
    commit_rows(backend, DB, [b"a", b"b"])
    txn = backend.begin()
    txn.delete(DB, b"a")
    txn.delete(DB, b"never-there")
    assert txn.get(DB, b"a") is None
    txn.commit()
    assert committed(backend) == expected([b"b"])


def test_delete_then_put_again_in_one_transaction(backend: Backend) -> None:
    """A key deleted and put again in the same transaction holds the new value."""
    commit_rows(backend, DB, [b"k"])
    txn = backend.begin()
    txn.delete(DB, b"k")
    txn.put(DB, b"k", b"again")
    txn.commit()
    assert committed(backend) == [(b"k", b"again")]


def test_empty_value_is_a_value(backend: Backend) -> None:
    """b'' is stored and read as b'', not as "missing" (the `active` and `timers` rows are b'')."""
    txn = backend.begin()
    txn.put(DB, b"k", b"")
    assert txn.get(DB, b"k") == b""
    txn.commit()
    with backend.read() as read:
        assert read.get(DB, b"k") == b""
        assert read.count(DB) == 1
        assert rows(read, DB) == [(b"k", b"")]
    txn = backend.begin()
    txn.delete(DB, b"k")
    txn.commit()
    assert committed(backend) == []


def test_large_values_and_the_largest_key_round_trip(backend: Backend) -> None:
    """A 4 MiB value (the default entry limit) and a 511-byte key (LMDB's limit) round-trip."""
    big = bytes(range(256)) * (4 * 1024 * 4)
    long_key = b"k" * 511
    txn = backend.begin()
    txn.put(DB, b"big", big)
    txn.put(DB, long_key, b"long")
    txn.commit()
    with backend.read() as read:
        assert read.get(DB, b"big") == big
        assert read.get(DB, long_key) == b"long"


def test_unknown_database_is_a_key_error(backend: Backend) -> None:
    """A database name outside `DBS` raises KeyError in reads and writes alike."""
    with backend.read() as read, pytest.raises(KeyError):
        read.get("no-such-db", b"k")
    txn = backend.begin()
    try:
        with pytest.raises(KeyError):
            txn.put("no-such-db", b"k", b"v")
    finally:
        txn.abort()


# -- key order --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["committed", "uncommitted", "mixed"])
def test_keys_are_ordered_bytewise(backend: Backend, where: str) -> None:
    """Scans yield keys in unsigned bytewise order (a shorter prefix first), whether the rows
    are committed, only written in the open transaction, or half and half."""
    keys = AWKWARD_KEYS[:]
    random.Random(7).shuffle(keys)
    if where == "committed":
        commit_rows(backend, DB, keys)
        assert committed(backend) == expected(keys)
        return
    if where == "mixed":
        commit_rows(backend, DB, keys[::2])
        fresh = keys[1::2]
    else:
        fresh = keys
    txn = backend.begin()
    for key in fresh:
        txn.put(DB, key, _value(key))
    assert rows(txn, DB) == expected(keys)
    txn.commit()
    assert committed(backend) == expected(keys)


def test_big_endian_integers_sort_numerically(backend: Backend) -> None:
    """be64 keys (timers, expiry, inbox sequence numbers) come back in numeric order."""
    numbers = [0, 1, 2, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
    shuffled = numbers[:]
    random.Random(3).shuffle(shuffled)
    commit_rows(backend, DB, (_BE64.pack(n) for n in shuffled))
    with backend.read() as read:
        assert [_BE64.unpack(key)[0] for key, _ in rows(read, DB)] == numbers


# -- scans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "first"),
    [
        pytest.param(b"", b"\x00", id="empty-start-is-the-first-row"),
        pytest.param(b"a", b"a", id="at-a-row"),
        pytest.param(b"a\x00\x00\x00", b"ab", id="between-rows-after-a-prefix"),
        pytest.param(b"ad", b"a\xff", id="between-rows-before-ff"),
        pytest.param(b"aa", b"ab", id="between-rows"),
        pytest.param(b"ab\x00", b"ab\xff", id="just-after-a-row"),
        pytest.param(b"\xfe\xff", b"\xff", id="before-the-last-row"),
        pytest.param(b"\xff", b"\xff", id="at-the-last-row"),
        pytest.param(b"\xff\x00", None, id="past-the-end"),
    ],
)
@pytest.mark.parametrize("where", ["committed", "uncommitted"])
def test_items_from_starts_at_the_first_key_not_below_start(
    backend: Backend, start: bytes, first: bytes | None, where: str
) -> None:
    """`items_from(start)` yields every row from the first key >= start to the end, in order."""
    want = [] if first is None else expected(SCAN_KEYS)[SCAN_KEYS.index(first) :]
    if where == "committed":
        commit_rows(backend, DB, SCAN_KEYS)
        with backend.read() as read:
            assert list(read.items_from(DB, start)) == want
        return
    txn = backend.begin()
    for key in SCAN_KEYS:
        txn.put(DB, key, _value(key))
    assert list(txn.items_from(DB, start)) == want
    txn.abort()


@pytest.mark.parametrize(
    ("prefix", "want"),
    [
        pytest.param(b"a", [b"a", b"a\x00", b"a\x00\x00", b"a\xff", b"ab", b"ab\xff", b"ac"], id="group"),
        pytest.param(b"a\x00", [b"a\x00", b"a\x00\x00"], id="nul-suffix"),
        pytest.param(b"ab", [b"ab", b"ab\xff"], id="stops-before-next-sibling"),
        pytest.param(b"a\xff", [b"a\xff"], id="ff-suffix"),
        pytest.param(b"b", [b"b", b"b\x00"], id="key-and-its-extension"),
        pytest.param(b"\xff", [b"\xff"], id="last-row"),
        pytest.param(b"aa", [], id="between-rows"),
        pytest.param(b"ab\xff\xff", [], id="longer-than-every-key"),
        pytest.param(b"\xff\xff", [], id="past-the-end"),
        pytest.param(b"", SCAN_KEYS, id="empty-prefix-is-everything"),
    ],
)
@pytest.mark.parametrize("where", ["committed", "uncommitted"])
def test_items_with_prefix_yields_exactly_the_matching_keys(
    backend: Backend, prefix: bytes, want: list[bytes], where: str
) -> None:
    """`items_with_prefix` yields the rows whose key starts with the prefix, in order, and none
    of the rows right after them (it stops at the first key that does not match)."""
    if where == "committed":
        commit_rows(backend, DB, SCAN_KEYS)
        with backend.read() as read:
            assert list(read.items_with_prefix(DB, prefix)) == expected(want)
        return
    txn = backend.begin()
    for key in SCAN_KEYS:
        txn.put(DB, key, _value(key))
    assert list(txn.items_with_prefix(DB, prefix)) == expected(want)
    txn.abort()


def test_scans_of_an_empty_database_yield_nothing(backend: Backend) -> None:
    """Both scans of an empty database are empty, and `count` is 0."""
    commit_rows(backend, OTHER, [b"a"])  # rows elsewhere do not leak in
    with backend.read() as read:
        assert list(read.items_from(DB, b"")) == []
        assert list(read.items_with_prefix(DB, b"")) == []
        assert list(read.items_with_prefix(DB, b"a")) == []
        assert list(read.items_before(DB, None)) == []
        assert list(read.items_before(DB, b"a")) == []
        assert read.count(DB) == 0


# -- the reverse scan -------------------------------------------------------------------------


def rows_before(txn: ReadTxn, db: str, end: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """Every row of `db` below `end` (all of them for None) as `txn` sees them, last key first."""
    return list(txn.items_before(db, end))


def rows_before_committed(backend: Backend, db: str = DB) -> list[tuple[bytes, bytes]]:
    """Every committed row of `db`, last key first, read in a fresh read transaction."""
    with backend.read() as txn:
        return rows_before(txn, db)


@pytest.mark.parametrize(
    ("end", "first"),
    [
        pytest.param(None, b"\xff", id="none-is-from-the-last-row"),
        pytest.param(b"\xff\x00", b"\xff", id="past-the-end"),
        pytest.param(b"\xff", b"b\x00", id="at-the-last-row-excludes-it"),
        pytest.param(b"b\x00", b"b", id="at-a-row-excludes-it"),
        pytest.param(b"a\xff\x00", b"a\xff", id="just-after-a-row"),
        pytest.param(b"ad", b"ac", id="between-rows-before-ff"),
        pytest.param(b"ab\x00", b"ab", id="between-a-row-and-its-extension"),
        pytest.param(b"a\x00\x00\x00", b"a\x00\x00", id="just-after-a-nul-extension"),
        pytest.param(b"a", b"\x00", id="at-a-prefix"),
        pytest.param(b"\x00", None, id="at-the-first-row"),
        pytest.param(b"\x00\x00", b"\x00", id="just-after-the-first-row"),
        pytest.param(b"", None, id="empty-end-is-below-every-key"),
    ],
)
@pytest.mark.parametrize("where", ["committed", "uncommitted", "mixed"])
def test_items_before_starts_at_the_last_key_below_end(
    backend: Backend, end: bytes | None, first: bytes | None, where: str
) -> None:
    """`items_before(end)` yields every row with a key < end (every row for None), last key first,
    down to the first row, whether the rows are committed, only written in the open
    transaction, or half and half."""
    want = [] if first is None else expected(SCAN_KEYS)[: SCAN_KEYS.index(first) + 1][::-1]
    if where == "committed":
        commit_rows(backend, DB, SCAN_KEYS)
        with backend.read() as read:
            assert rows_before(read, DB, end) == want
        return
    if where == "mixed":
        commit_rows(backend, DB, SCAN_KEYS[::2])
        fresh = SCAN_KEYS[1::2]
    else:
        fresh = SCAN_KEYS
    txn = backend.begin()
    for key in fresh:
        txn.put(DB, key, _value(key))
    assert rows_before(txn, DB, end) == want
    txn.abort()


@pytest.mark.parametrize("where", ["committed", "uncommitted", "mixed"])
def test_items_before_is_the_reverse_bytewise_order(backend: Backend, where: str) -> None:
    """The reverse scan is exactly the forward scan reversed, over keys that order differently
    under any comparison but the unsigned bytewise one."""
    keys = AWKWARD_KEYS[:]
    random.Random(11).shuffle(keys)
    if where == "committed":
        commit_rows(backend, DB, keys)
        with backend.read() as read:
            assert rows_before(read, DB) == expected(keys)[::-1]
        return
    if where == "mixed":
        commit_rows(backend, DB, keys[::2])
        fresh = keys[1::2]
    else:
        fresh = keys
    txn = backend.begin()
    for key in fresh:
        txn.put(DB, key, _value(key))
    assert rows_before(txn, DB) == expected(keys)[::-1]
    txn.commit()
    with backend.read() as read:
        assert rows_before(read, DB) == expected(keys)[::-1]


def test_items_before_sees_overwrites_and_deletes_of_the_transaction(backend: Backend) -> None:
    """In a write transaction the reverse scan reflects its own overwrites and deletes of
    committed rows, including the row right below `end` and the last row."""
    commit_rows(backend, DB, [b"k1", b"k2", b"k3", b"k4"])
    txn = backend.begin()
    txn.delete(DB, b"k4")
    txn.delete(DB, b"k2")
    txn.put(DB, b"k3", b"changed")
    txn.put(DB, b"k0", b"new")
    want = [(b"k3", b"changed"), (b"k1", _value(b"k1")), (b"k0", b"new")]
    assert rows_before(txn, DB) == want
    assert rows_before(txn, DB, b"k3") == want[1:]
    assert rows_before(txn, DB, b"k2") == want[1:]
    assert rows_before(txn, DB, b"k1") == want[2:]
    with backend.read() as read:  # not visible outside before commit
        assert rows_before(read, DB) == expected([b"k1", b"k2", b"k3", b"k4"])[::-1]
    txn.commit()
    assert rows_before_committed(backend) == want


def test_items_before_in_nested_transactions(backend: Backend) -> None:
    """A child's reverse scan sees its parent's and its own writes; once aborted, the parent's
    scan no longer shows the child's."""
    commit_rows(backend, DB, [b"c1", b"c2"])
    parent = backend.begin()
    parent.put(DB, b"p", b"p")
    parent.delete(DB, b"c1")
    child = parent.child()
    child.put(DB, b"z", b"z")
    child.delete(DB, b"c2")
    assert rows_before(child, DB) == [(b"z", b"z"), (b"p", b"p")]
    child.abort()
    assert rows_before(parent, DB) == [(b"p", b"p"), (b"c2", _value(b"c2"))]
    parent.abort()


def test_a_reverse_scan_in_progress_is_unaffected_by_a_commit(backend: Backend) -> None:
    """A reverse scan of a read transaction goes on over its snapshot across a commit that
    deletes, overwrites and adds rows it has not reached yet."""
    keys = [b"k%d" % n for n in range(6)]
    commit_rows(backend, DB, keys)
    with backend.read() as read:
        scan = read.items_before(DB, None)
        seen = [next(scan), next(scan)]
        txn = backend.begin()
        txn.delete(DB, b"k2")
        txn.put(DB, b"k1", b"changed")
        txn.put(DB, b"k0\x00", b"new")
        txn.commit()
        seen.extend(scan)
    assert seen == expected(keys)[::-1]


# -- delete_prefix and count ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "removed"),
    [
        pytest.param(b"a", [b"a", b"a\x00", b"a\x00\x00", b"a\xff", b"ab", b"ab\xff", b"ac"], id="group"),
        pytest.param(b"ab", [b"ab", b"ab\xff"], id="subgroup"),
        pytest.param(b"\xff", [b"\xff"], id="last-row"),
        pytest.param(b"aa", [], id="no-match"),
        pytest.param(b"\xff\xff", [], id="past-the-end"),
        pytest.param(b"", SCAN_KEYS, id="empty-prefix-is-everything"),
    ],
)
def test_delete_prefix_removes_exactly_the_matching_rows(backend: Backend, prefix: bytes, removed: list[bytes]) -> None:
    """`delete_prefix` returns how many rows it removed, removes those and only those (in this
    database only), and the removal is what gets committed."""
    commit_rows(backend, DB, SCAN_KEYS)
    commit_rows(backend, OTHER, SCAN_KEYS)
    txn = backend.begin()
    assert txn.delete_prefix(DB, prefix) == len(removed)
    kept = [key for key in SCAN_KEYS if key not in removed]
    assert rows(txn, DB) == expected(kept)
    assert txn.count(DB) == len(kept)
    txn.commit()
    assert committed(backend) == expected(kept)
    assert committed(backend, OTHER) == expected(SCAN_KEYS)


def test_delete_prefix_counts_committed_and_uncommitted_rows_once(backend: Backend) -> None:
    """Inside a write, `delete_prefix` sees the transaction's own puts and deletes: it counts a
    row put in the transaction, not one already deleted in it."""
    commit_rows(backend, DB, [b"p1", b"p2", b"p3", b"q"])
    txn = backend.begin()
    txn.put(DB, b"p4", b"new")
    txn.put(DB, b"p1", b"overwritten")
    txn.delete(DB, b"p2")
    assert txn.delete_prefix(DB, b"p") == 3  # p1, p3, p4
    assert txn.delete_prefix(DB, b"p") == 0
    txn.commit()
    assert committed(backend) == expected([b"q"])


def test_count_follows_puts_overwrites_and_deletes(backend: Backend) -> None:
    """`count` in a write transaction counts committed rows plus its own new rows, minus its own
    deletes; overwrites and deletes of absent keys change nothing; readers see the committed count."""
    commit_rows(backend, DB, [b"a", b"b", b"c"])
    txn = backend.begin()
    assert txn.count(DB) == 3
    txn.put(DB, b"d", b"")
    txn.put(DB, b"a", b"overwrite")
    txn.delete(DB, b"b")
    txn.delete(DB, b"zz")
    assert txn.count(DB) == 3
    with backend.read() as read:
        assert read.count(DB) == 3
    txn.put(DB, b"b", b"back")
    assert txn.count(DB) == 4
    txn.commit()
    with backend.read() as read:
        assert read.count(DB) == 4
        assert read.count(OTHER) == 0


# -- transactions -----------------------------------------------------------------------------


def test_a_write_transaction_reads_its_own_writes(backend: Backend) -> None:
    """Every read of a write transaction (get, both scans, count) reflects its own puts,
    overwrites and deletes of committed rows before it commits."""
    commit_rows(backend, DB, [b"k1", b"k2", b"k3"])
    txn = backend.begin()
    txn.put(DB, b"k0", b"new")
    txn.put(DB, b"k2", b"changed")
    txn.delete(DB, b"k3")
    assert txn.get(DB, b"k0") == b"new"
    assert txn.get(DB, b"k2") == b"changed"
    assert txn.get(DB, b"k3") is None
    want = [(b"k0", b"new"), (b"k1", _value(b"k1")), (b"k2", b"changed")]
    assert list(txn.items_from(DB, b"")) == want
    assert list(txn.items_from(DB, b"k1")) == want[1:]
    assert list(txn.items_with_prefix(DB, b"k")) == want
    assert list(txn.items_before(DB, None)) == want[::-1]
    assert txn.count(DB) == 3
    txn.commit()
    assert committed(backend) == want


def test_a_read_transaction_does_not_see_uncommitted_writes(backend: Backend) -> None:
    """While a write is open, a reader sees only what is committed; after the commit, a new
    reader sees the writes."""
    commit_rows(backend, DB, [b"old", b"gone"])
    txn = backend.begin()
    txn.put(DB, b"new", b"1")
    txn.put(DB, b"old", b"changed")
    txn.delete(DB, b"gone")
    with backend.read() as read:
        assert read.get(DB, b"new") is None
        assert read.get(DB, b"old") == _value(b"old")
        assert read.get(DB, b"gone") == _value(b"gone")
        assert rows(read, DB) == expected([b"old", b"gone"])
        assert list(read.items_with_prefix(DB, b"n")) == []
        assert list(read.items_before(DB, None)) == expected([b"old", b"gone"])[::-1]
        assert read.count(DB) == 2
    txn.commit()
    assert committed(backend) == [(b"new", b"1"), (b"old", b"changed")]


def test_aborted_writes_vanish(backend: Backend) -> None:
    """An aborted transaction leaves nothing: puts, overwrites, deletes and delete_prefix are
    all undone, and the next write transaction starts from the committed rows."""
    commit_rows(backend, DB, [b"a", b"b", b"c"])
    txn = backend.begin()
    txn.put(DB, b"new", b"x")
    txn.put(DB, b"a", b"changed")
    txn.delete(DB, b"b")
    assert txn.delete_prefix(DB, b"c") == 1
    txn.put(OTHER, b"elsewhere", b"x")
    txn.abort()
    assert committed(backend) == expected([b"a", b"b", b"c"])
    assert committed(backend, OTHER) == []
    again = backend.begin()
    assert rows(again, DB) == expected([b"a", b"b", b"c"])
    again.abort()


def test_a_write_transaction_can_begin_after_commit_and_after_abort(backend: Backend) -> None:
    """One write transaction at a time: ending one (either way) lets the next begin."""
    for end in ("commit", "abort", "commit"):
        txn = backend.begin()
        txn.put(DB, end.encode(), b"")
        txn.commit() if end == "commit" else txn.abort()
    assert [key for key, _ in committed(backend)] == [b"commit"]


def test_an_open_read_keeps_its_snapshot_across_a_later_commit(backend: Backend) -> None:
    """A read transaction is a consistent view (`ReadTxn`): a commit made while it is open does
    not show through it (get, scans, count); a reader opened afterwards sees the commit."""
    commit_rows(backend, DB, [b"a", b"b", b"c"])
    with backend.read() as before:
        txn = backend.begin()
        txn.put(DB, b"d", b"new")
        txn.put(DB, b"a", b"changed")
        txn.delete(DB, b"b")
        txn.commit()
        assert before.get(DB, b"a") == _value(b"a")
        assert before.get(DB, b"b") == _value(b"b")
        assert before.get(DB, b"d") is None
        assert rows(before, DB) == expected([b"a", b"b", b"c"])
        assert list(before.items_before(DB, None)) == expected([b"a", b"b", b"c"])[::-1]
        assert before.count(DB) == 3
        with backend.read() as after:
            assert rows(after, DB) == [(b"a", b"changed"), (b"c", _value(b"c")), (b"d", b"new")]
    assert committed(backend) == [(b"a", b"changed"), (b"c", _value(b"c")), (b"d", b"new")]


def test_a_scan_in_progress_is_unaffected_by_a_commit(backend: Backend) -> None:
    """A scan of a read transaction, interrupted by a commit that deletes and overwrites the rows
    it has not reached yet, goes on over its snapshot (no error, no mix of old and new)."""
    keys = [b"k%d" % n for n in range(6)]
    commit_rows(backend, DB, keys)
    with backend.read() as read:
        scan = read.items_from(DB, b"")
        seen = [next(scan), next(scan)]
        txn = backend.begin()
        txn.delete(DB, b"k3")
        txn.put(DB, b"k4", b"changed")
        txn.put(DB, b"k9", b"new")
        txn.commit()
        seen.extend(scan)
    assert seen == expected(keys)


# -- nested transactions ----------------------------------------------------------------------


def test_a_child_sees_its_parents_writes(backend: Backend) -> None:
    """A child transaction reads what its parent wrote (and deleted) before it began."""
    commit_rows(backend, DB, [b"committed", b"doomed"])
    parent = backend.begin()
    parent.put(DB, b"parent", b"p")
    parent.delete(DB, b"doomed")
    child = parent.child()
    assert child.get(DB, b"parent") == b"p"
    assert child.get(DB, b"doomed") is None
    assert [key for key, _ in child.items_from(DB, b"")] == [b"committed", b"parent"]
    assert [key for key, _ in child.items_with_prefix(DB, b"p")] == [b"parent"]
    assert child.count(DB) == 2
    child.abort()
    parent.abort()


def test_a_committed_child_joins_its_parent(backend: Backend) -> None:
    """A child's writes (puts, overwrites, deletes of committed rows) become the parent's on
    `child.commit()`; nothing is visible to readers until the parent commits."""
    commit_rows(backend, DB, [b"keep", b"overwrite", b"remove"])
    parent = backend.begin()
    parent.put(DB, b"parent", b"p")
    child = parent.child()
    child.put(DB, b"child", b"c")
    child.put(DB, b"overwrite", b"by-child")
    child.delete(DB, b"remove")
    child.commit()
    want = [(b"child", b"c"), (b"keep", _value(b"keep")), (b"overwrite", b"by-child"), (b"parent", b"p")]
    assert rows(parent, DB) == want
    assert parent.count(DB) == 4
    assert committed(backend) == expected([b"keep", b"overwrite", b"remove"])
    parent.commit()
    assert committed(backend) == want


def test_an_aborted_child_discards_only_its_own_writes(backend: Backend) -> None:
    """Aborting a child undoes its writes, even those over rows the parent or an earlier child
    wrote, and keeps everything else of the parent."""
    commit_rows(backend, DB, [b"committed"])
    parent = backend.begin()
    parent.put(DB, b"parent", b"p")
    first = parent.child()
    first.put(DB, b"first", b"1")
    first.commit()
    second = parent.child()
    second.put(DB, b"second", b"2")
    second.put(DB, b"parent", b"clobbered")
    second.delete(DB, b"first")
    second.delete(DB, b"committed")
    assert second.delete_prefix(DB, b"") == 2  # parent, second
    second.abort()
    want = [(b"committed", _value(b"committed")), (b"first", b"1"), (b"parent", b"p")]
    assert rows(parent, DB) == want
    assert parent.count(DB) == 3
    parent.commit()
    assert committed(backend) == want


def test_group_commit_isolates_a_failing_request(backend: Backend) -> None:
    """The writer's pattern: one child per request in one transaction; a request that fails is
    aborted and leaves nothing while the requests around it commit, across databases."""

    def ok(name: bytes) -> None:
        child = parent.child()
        child.put(DB, name, b"ok")
        child.put(OTHER, name, b"ok")
        child.commit()

    commit_rows(backend, DB, [b"shared"])
    parent = backend.begin()
    ok(b"r1")
    failing = parent.child()
    failing.put(DB, b"r2", b"half-done")
    failing.put(OTHER, b"r2", b"half-done")
    failing.delete(DB, b"shared")
    failing.abort()
    ok(b"r3")
    parent.commit()
    assert committed(backend) == [(b"r1", b"ok"), (b"r3", b"ok"), (b"shared", _value(b"shared"))]
    assert committed(backend, OTHER) == [(b"r1", b"ok"), (b"r3", b"ok")]


def test_grandchildren_nest(backend: Backend) -> None:
    """A grandchild that commits joins its child; the child aborting then discards both."""
    parent = backend.begin()
    parent.put(DB, b"parent", b"p")
    child = parent.child()
    grandchild = child.child()
    grandchild.put(DB, b"grandchild", b"g")
    assert grandchild.get(DB, b"parent") == b"p"
    grandchild.commit()
    assert child.get(DB, b"grandchild") == b"g"
    child.abort()
    assert parent.get(DB, b"grandchild") is None
    kept = parent.child()
    inner = kept.child()
    inner.put(DB, b"inner", b"i")
    inner.commit()
    kept.commit()
    parent.commit()
    assert committed(backend) == [(b"inner", b"i"), (b"parent", b"p")]


# -- named databases --------------------------------------------------------------------------


def test_every_named_database_exists(backend: Backend) -> None:
    """Each database of `DBS` accepts writes and reads them back after commit."""
    txn = backend.begin()
    for db in DBS:
        txn.put(db, b"probe", db.encode())
    txn.commit()
    with backend.read() as read:
        for db in DBS:
            assert read.get(db, b"probe") == db.encode()
            assert read.count(db) == 1


def test_named_databases_are_independent(backend: Backend) -> None:
    """The same key in every database holds that database's own value; deletes, delete_prefix,
    scans and counts of one database never touch another."""
    names = list(DBS)
    txn = backend.begin()
    for db in names:
        txn.put(db, b"same", db.encode())
        txn.put(db, b"same\x00" + db.encode(), b"")
    txn.commit()
    first, second, *rest = names
    txn = backend.begin()
    txn.delete(first, b"same")
    assert txn.delete_prefix(second, b"same") == 2
    txn.commit()
    with backend.read() as read:
        assert rows(read, first) == [(b"same\x00" + first.encode(), b"")]
        assert rows(read, second) == []
        for db in rest:
            assert rows(read, db) == [(b"same", db.encode()), (b"same\x00" + db.encode(), b"")]
            assert list(read.items_with_prefix(db, b"same\x00")) == [(b"same\x00" + db.encode(), b"")]
            assert list(read.items_before(db, None)) == [(b"same\x00" + db.encode(), b""), (b"same", db.encode())]
            assert read.count(db) == 2
