"""proxy/keys.py: key codecs sort the way the store scans them and stay under LMDB's key limit."""

from __future__ import annotations

import random

import pytest

from durable_core.keys import (
    START_INDEX,
    expiry_key,
    idempotency_key,
    invocation_key,
    journal_key,
    journal_prefix,
    new_invocation_id,
    split_expiry_key,
    split_journal_key,
    split_timer_key,
    timer_key,
)

LMDB_MAX_KEY = 511


def test_invocation_id_shape() -> None:
    inv = new_invocation_id(1_700_000_000_000, bytes(10))
    # Restate's form: inv_, scheme version 1, 11 + 22 base62 characters (see tests/unit/test_ids.py).
    assert inv.startswith("inv_1")
    assert inv.isascii() and inv[4:].isalnum()
    assert len(inv) == 5 + 11 + 22


def test_invocation_id_is_deterministic_given_time_and_entropy() -> None:
    assert new_invocation_id(5, b"\x01" * 10) == new_invocation_id(5, b"\x01" * 10)
    assert new_invocation_id(5, b"\x01" * 10) != new_invocation_id(5, b"\x02" * 10)
    assert new_invocation_id(5, b"\x01" * 10) != new_invocation_id(6, b"\x01" * 10)


def test_invocation_ids_are_random_without_entropy() -> None:
    ids = {new_invocation_id(1_700_000_000_000) for _ in range(200)}
    assert len(ids) == 200


def test_invocation_ids_sort_by_creation_time_consecutive_ms() -> None:
    # Regression: an alphabet not in ASCII order (standard base32 "a-z2-7", base62 "0-9a-zA-Z")
    # put ids of consecutive milliseconds out of order whenever a digit rolled over.
    start = 1_700_000_000_000
    ids = [new_invocation_id(t, bytes(10)) for t in range(start, start + 4096)]
    assert ids == sorted(ids)


def test_invocation_ids_sort_by_creation_time_random() -> None:
    rng = random.Random(1234)
    times = sorted(rng.randrange(0, 2**48) for _ in range(2000))
    ids = [new_invocation_id(t, rng.randbytes(10)) for t in times]
    assert [t for _, t in sorted(zip(ids, times, strict=True))] == times


def test_time_dominates_entropy_in_order() -> None:
    assert new_invocation_id(1000, b"\xff" * 10) < new_invocation_id(1001, bytes(10))


def test_invocation_key_is_ascii_bytes() -> None:
    assert invocation_key("inv_abc") == b"inv_abc"


@pytest.mark.parametrize("index", [0, 1, 255, 256, 65535, 2**31, 2**32 - 1])
def test_journal_key_round_trip(index: int) -> None:
    key = journal_key("inv_abc", index)
    assert key.startswith(journal_prefix("inv_abc"))
    assert split_journal_key(key) == ("inv_abc", index)


def test_journal_keys_sort_numerically() -> None:
    indexes = [0, 1, 2, 9, 10, 11, 99, 100, 255, 256, 1000, 65536, 2**24 + 3]
    keys = [journal_key("inv_x", i) for i in reversed(indexes)]
    assert [split_journal_key(k)[1] for k in sorted(keys)] == indexes


def test_journal_prefix_does_not_cover_a_longer_id() -> None:
    # The NUL separator stops "inv_a" from matching the journal rows of "inv_ab".
    assert not journal_key("inv_ab", 0).startswith(journal_prefix("inv_a"))
    assert journal_key("inv_a", 7).startswith(journal_prefix("inv_a"))


def test_journal_index_must_fit_in_32_bits() -> None:
    with pytest.raises(Exception):  # noqa: B017 - struct.error
        journal_key("inv_x", 2**32)


def test_idempotency_key_is_fixed_size_for_huge_user_keys() -> None:
    key = idempotency_key("Svc", "handler", "k" * 10_000, "i" * 600)
    assert len(key) == 32 <= LMDB_MAX_KEY


@pytest.mark.parametrize(
    "other",
    [
        ("Svc2", "h", "", "idem"),
        ("Svc", "h2", "", "idem"),
        ("Svc", "h", "k", "idem"),
        ("Svc", "h", "", "idem2"),
        ("Svc", "h", "idem", ""),
    ],
)
def test_idempotency_key_is_scoped_to_the_target(other: tuple[str, str, str, str]) -> None:
    assert idempotency_key("Svc", "h", "", "idem") != idempotency_key(*other)


def test_idempotency_key_is_stable() -> None:
    assert idempotency_key("S", "h", "k", "i") == idempotency_key("S", "h", "k", "i")


def test_idempotency_key_accepts_any_unicode() -> None:
    # Lone surrogates can come out of percent-decoding; they must not crash the hash.
    assert len(idempotency_key("S", "h", "\ud800", "ключ ✓")) == 32


# -- timers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 7, START_INDEX])
def test_timer_key_round_trip(index: int) -> None:
    assert split_timer_key(timer_key(1_700_000_000_123, "inv_abc", index)) == (1_700_000_000_123, "inv_abc", index)


def test_timer_keys_sort_by_due_time_first() -> None:
    rng = random.Random(5)
    rows = [(rng.randrange(0, 2**50), f"inv_{rng.randrange(10**6)}", rng.randrange(100)) for _ in range(500)]
    keys = sorted(timer_key(*row) for row in rows)
    due = [split_timer_key(k)[0] for k in keys]
    assert due == sorted(due)


def test_timer_key_clamps_times_before_the_epoch() -> None:
    assert split_timer_key(timer_key(-5, "inv_a", 1))[0] == 0


@pytest.mark.parametrize("due_ms", [2**64, 10**30, 2**200])
def test_timer_and_expiry_keys_clamp_times_past_the_u64_range(due_ms: int) -> None:
    """A due time past 2**64 - 1 ms (e.g. ``?delay=PT99999999999999999999H``) was a struct.error, a 500."""
    assert split_timer_key(timer_key(due_ms, "inv_a", 1)) == (2**64 - 1, "inv_a", 1)
    assert split_expiry_key(expiry_key(due_ms, "inv_a")) == (2**64 - 1, "inv_a")
