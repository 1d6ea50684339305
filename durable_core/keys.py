"""LMDB key codecs: big-endian integers, NUL-joined parts, sha256 for user-supplied keys."""

from __future__ import annotations

import hashlib
import os
import struct

from handlers_sdk import ids

__all__ = [
    "START_INDEX",
    "expiry_key",
    "idempotency_key",
    "invocation_key",
    "journal_key",
    "journal_prefix",
    "new_invocation_id",
    "split_expiry_key",
    "split_journal_key",
    "split_timer_key",
    "timer_key",
]

_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_MAX_BE64 = 2**64 - 1
#: Timer index meaning "start this scheduled invocation" rather than "complete entry N".
START_INDEX = 0xFFFFFFFF


def new_invocation_id(now_ms: int, entropy: bytes | None = None) -> str:
    """A fresh id in Restate's format (`handlers_sdk.ids`): its string order is the creation order,
    its uuid a ULID of `now_ms` and 80 bits of `entropy` (random when not given)."""
    return ids.new_invocation_id(now_ms, entropy if entropy is not None else os.urandom(10))


def invocation_key(invocation_id: str) -> bytes:
    """Key of an invocation's rows (ids are short ASCII, well under LMDB's 511-byte limit)."""
    return invocation_id.encode("ascii")


def journal_prefix(invocation_id: str) -> bytes:
    """Prefix shared by every journal row of one invocation."""
    return invocation_id.encode("ascii") + b"\x00"


def journal_key(invocation_id: str, index: int) -> bytes:
    """Key of one journal entry: id, NUL, big-endian index (so a cursor walks them in order)."""
    return journal_prefix(invocation_id) + _BE32.pack(index)


def split_journal_key(key: bytes) -> tuple[str, int]:
    """Inverse of `journal_key`."""
    return key[:-5].decode("ascii"), _BE32.unpack(key[-4:])[0]


def idempotency_key(service: str, handler: str, key: str, idempotency: str) -> bytes:
    """Index key of an idempotency key, hashed because user keys can exceed 511 bytes."""
    joined = "\x00".join((service, handler, key, idempotency)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).digest()


def _due(ms: int) -> bytes:
    """A time in ms as a big-endian u64, clamped to its range (the ingress caps delays; a handler's
    wake-up time past year 584 million means "never" and must not fail the write)."""
    return _BE64.pack(min(max(0, ms), _MAX_BE64))


def timer_key(wake_at_ms: int, invocation_id: str, index: int) -> bytes:
    """Key of a durable timer: big-endian due time first, so a cursor yields them in due order."""
    return _due(wake_at_ms) + invocation_id.encode("ascii") + b"\x00" + _BE32.pack(index)


def split_timer_key(key: bytes) -> tuple[int, str, int]:
    """Inverse of `timer_key`: (due time, invocation id, journal index or START_INDEX)."""
    return _BE64.unpack(key[:8])[0], key[8:-5].decode("ascii"), _BE32.unpack(key[-4:])[0]


def expiry_key(expires_ms: int, invocation_id: str) -> bytes:
    """Key of a completed invocation in the retention index, in expiry order."""
    return _due(expires_ms) + invocation_id.encode("ascii")


def split_expiry_key(key: bytes) -> tuple[int, str]:
    """Inverse of `expiry_key`."""
    return _BE64.unpack(key[:8])[0], key[8:].decode("ascii")
