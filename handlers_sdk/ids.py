"""Invocation ids in Restate's format, and the fixed-width base62 they share with deployment ids.

Restate writes an invocation id as ``inv_``, the id scheme version ``1``, then two integers in
fixed-width base62 (alphabet ``0-9a-zA-Z``, leading zeros): its partition key, a u64 in 11
characters, and the invocation's uuid, a u128 in 22 characters. Restate's CLI parses exactly that
(it reads each field back as an integer, so a field must not exceed its type), so the proxy's ids
have that shape too.

The proxy's store also needs its ids to **sort by creation as strings** (listings, their cursors
and the ``active`` index walk the keys in byte order). Base62 with that alphabet does not: ASCII
puts ``A-Z`` before ``a-z``, the alphabet the other way round. So the first field, which the proxy
does not need as a partition key (its partitions hash the whole id), carries the creation time in
milliseconds written with the alphabet's first 36 digits only (``0-9a-z``, in ASCII order): 11
base-36 digits, which are also 11 valid base62 digits of a u64 (the time is capped at 48 bits,
so the top digit is always ``0`` and the value stays far below 2**64). Two new ids therefore
compare as their creation times, then arbitrarily but consistently by the second field.

The second field is, for an invocation created by the proxy, a ULID like Restate's own
``InvocationUuid`` (the 48-bit time, then 80 random bits); for an invocation started by entry
``index`` of a call or send, the first 128 bits of sha256 of (parent id, index), so that a replay
derives the same child again (`child_invocation_id`). A child carries its parent's creation time,
so it lists next to its parent.

Older stores hold ids of two other shapes, ``inv_`` + 26 characters: base32hex of the 48-bit time
and 80 random bits (``0-9a-v``; they start with ``0`` until the year 2248), and, for children,
base32 of a digest (``a-z2-7``, never ``0``). Both stay valid (`INVOCATION_ID_PATTERN`). Every new
id sorts after every old time-ordered one (``inv_1`` > ``inv_0``).

Restate's CLI shows an awakeable as ``prom_1`` then the unpadded URL-safe base64 of 28 bytes: the
invocation id's binary form, then the journal index of the awakeable entry (a big-endian u32);
Restate's ingress accepts it with or without padding. The binary form holds the two fields as
Restate's integers, which are **not** the base62 values of the text: Restate byte-swaps an integer
(``to_be``) before writing it in base62 and swaps it back when reading (``from_be``), so on the
little-endian machines Restate ships for, the integer is the byte-swap of the text's value, and
its big-endian bytes are the text's value in little-endian order (8 bytes of the partition key
field, then 16 of the uuid field). The CLI computes the id from an invocation id in Restate's
form and a ``sys_journal`` row's index, so `restate_awakeable_id` and `parse_restate_awakeable_id`
map it to exactly the invocation and index of the proxy's ``awk_`` id (the test holds one that
Restate's CLI printed). An older id has no binary form, and its awakeables no ``prom_1`` id.
(Restate's newer ``sign_1`` ids name a signal, numbered apart from the journal: they have no
counterpart here.)

Pure: no I/O, no clock (callers pass the time and the random bits).
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = [
    "BASE62",
    "INVOCATION_ID_PATTERN",
    "PARTITION_KEY_WIDTH",
    "UUID_WIDTH",
    "base62_fixed",
    "child_invocation_id",
    "created_ms_of",
    "decode_base62",
    "encode_invocation_id",
    "legacy_child_invocation_id",
    "new_invocation_id",
    "parse_restate_awakeable_id",
    "restate_awakeable_id",
]

#: Restate's base62 alphabet (digits, lower case, upper case: the `base62` crate's "alternative" one).
BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_INDEX = {c: i for i, c in enumerate(BASE62)}
#: Characters of a u64 (an id's partition key) and of a u128 (its uuid) in fixed-width base62.
PARTITION_KEY_WIDTH = 11
UUID_WIDTH = 22
#: Milliseconds are kept to 48 bits, as in a ULID (about the year 10889).
_MAX_MS = 2**48 - 1
#: The digits the time is written with: the prefix of the alphabet that is in ASCII order.
_SORTABLE = 36
_PREFIX = "inv_1"

#: A well-formed invocation id: Restate's form (``inv_1`` + 33 base62 characters), or one of the
#: two older forms (``inv_`` + 26 characters of base32hex or base32, lower case). The ingress
#: answers 400 for an id that is not one, 404 for one it does not know.
INVOCATION_ID_PATTERN = re.compile(r"inv_(?:1[0-9a-zA-Z]{33}|[0-9a-z]{26})")


def base62_fixed(value: int, width: int) -> str:
    """`value` in Restate's fixed-width base62: `width` digits, most significant first, zero-padded.

    Raises:
        ValueError: `value` is negative or needs more than `width` digits.
    """
    if value < 0:
        raise ValueError(f"cannot encode {value}: negative")
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    if value:
        raise ValueError(f"does not fit in {width} base62 digits")
    return "".join(reversed(digits))


def decode_base62(text: str) -> int:
    """Inverse of `base62_fixed`.

    Raises:
        ValueError: `text` has a character outside the alphabet.
    """
    value = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            raise ValueError(f"{char!r} is not a base62 digit")
        value = value * 62 + digit
    return value


def _time_field(created_ms: int) -> str:
    """The creation time as 11 digits of ``0-9a-z`` (base 36, so the string order is the time order)."""
    ms = min(max(0, created_ms), _MAX_MS)
    digits = []
    for _ in range(PARTITION_KEY_WIDTH):
        ms, digit = divmod(ms, _SORTABLE)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def encode_invocation_id(created_ms: int, uuid: int) -> str:
    """An id in Restate's format whose string order is the order of `created_ms` (see the module
    docs): ``inv_1``, the time in the partition-key field, `uuid` (a u128) in the uuid field."""
    return _PREFIX + _time_field(created_ms) + base62_fixed(uuid, UUID_WIDTH)


def new_invocation_id(now_ms: int, entropy: bytes) -> str:
    """The id of an invocation created at `now_ms`; its uuid is a ULID of the time and the 10 bytes
    of `entropy` (random, or derived where the id must be deterministic, as for a schedule's firing).

    Raises:
        ValueError: `entropy` is not 10 bytes.
    """
    if len(entropy) != 10:
        raise ValueError(f"expected 10 bytes of entropy, got {len(entropy)}")
    ms = min(max(0, now_ms), _MAX_MS)
    return encode_invocation_id(ms, (ms << 80) | int.from_bytes(entropy, "big"))


def created_ms_of(invocation_id: str) -> int | None:
    """The creation time an id carries: the time field of Restate's form, the first 48 bits of an
    older base32hex id; None for an older digest id (a child's, which carries no time) or a
    string that is no id."""
    if INVOCATION_ID_PATTERN.fullmatch(invocation_id) is None:
        return None
    body = invocation_id[4:]
    if body[0] == "1" and len(body) == 1 + PARTITION_KEY_WIDTH + UUID_WIDTH:
        field = body[1 : 1 + PARTITION_KEY_WIDTH]
        if any(_INDEX[c] >= _SORTABLE for c in field):
            return None  # Restate's own id: its first field is a partition key
        return int(field, _SORTABLE)
    if body[0] != "0":  # base32 digests never hold a 0; base32hex times start with one until 2248
        return None
    try:
        raw = base64.b32hexdecode(body.upper() + "======")
    except ValueError:
        return None
    return int.from_bytes(raw[:6], "big")


def child_invocation_id(parent_id: str, index: int) -> str:
    """The id of the invocation started by entry `index` of `parent_id` (the same on every replay):
    the parent's creation time (0 when its id carries none), then the first 128 bits of
    sha256(parent id, NUL, index) as the uuid."""
    digest = hashlib.sha256(f"{parent_id}\x00{index}".encode()).digest()[:16]
    return encode_invocation_id(created_ms_of(parent_id) or 0, int.from_bytes(digest, "big"))


def legacy_child_invocation_id(parent_id: str, index: int) -> str:
    """The child id SDKs derived before Restate's format (``inv_`` + base32 of the same digest); the
    proxy still accepts it from an SDK that has not been upgraded."""
    digest = hashlib.sha256(f"{parent_id}\x00{index}".encode()).digest()[:16]
    return "inv_" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


_AWAKEABLE_PREFIX = "prom_1"
#: The binary invocation id (u64 partition key, u128 uuid) and the entry index (u32).
_AWAKEABLE_BYTES = 8 + 16 + 4
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def _restate_fields(invocation_id: str) -> tuple[int, int] | None:
    """(partition key, uuid) of an id in Restate's form, or None (another form, or a field that
    overflows its integer: Restate could not parse that id either)."""
    if INVOCATION_ID_PATTERN.fullmatch(invocation_id) is None or not invocation_id.startswith(_PREFIX):
        return None
    body = invocation_id[len(_PREFIX) :]
    partition_key = decode_base62(body[:PARTITION_KEY_WIDTH])
    uuid = decode_base62(body[PARTITION_KEY_WIDTH:])
    if partition_key >= 2**64 or uuid >= 2**128:
        return None
    return partition_key, uuid


def restate_awakeable_id(invocation_id: str, index: int) -> str | None:
    """The ``prom_1`` id Restate's CLI shows for the awakeable at entry `index` of `invocation_id`
    (see the module docs), or None for an id that is not in Restate's form or an index that is
    not a u32."""
    fields = _restate_fields(invocation_id)
    if fields is None or not 0 <= index < 2**32:
        return None
    # Little-endian: Restate's integer is the byte-swap of the text's value (see the module docs).
    raw = fields[0].to_bytes(8, "little") + fields[1].to_bytes(16, "little") + index.to_bytes(4, "big")
    return _AWAKEABLE_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def parse_restate_awakeable_id(awakeable: str) -> tuple[str, int] | None:
    """(invocation id, entry index) of a ``prom_1`` awakeable id, padded or not; None when
    `awakeable` is not one (only the canonical encoding of 28 bytes is one)."""
    text = awakeable.removeprefix(_AWAKEABLE_PREFIX)
    if text == awakeable or _BASE64URL.fullmatch(text) is None:
        return None
    unpadded = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except ValueError:  # binascii.Error: a length no encoding has
        return None
    # Re-encoding rejects what decodes leniently: stray padding, non-zero trailing bits (Restate's
    # decoder refuses those too), so that one awakeable has one unpadded text.
    if len(raw) != _AWAKEABLE_BYTES or base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != unpadded:
        return None
    if text != unpadded and len(text) != len(unpadded) + (-len(unpadded) % 4):
        return None
    partition_key, uuid = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:24], "little")
    invocation_id = _PREFIX + base62_fixed(partition_key, PARTITION_KEY_WIDTH) + base62_fixed(uuid, UUID_WIDTH)
    return invocation_id, int.from_bytes(raw[24:], "big")
