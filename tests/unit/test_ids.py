"""handlers_sdk/ids.py: invocation ids in Restate's format that still sort by creation."""

from __future__ import annotations

import base64
import random
import struct

import pytest

from handlers_sdk.ids import (
    BASE62,
    INVOCATION_ID_PATTERN,
    base62_fixed,
    child_invocation_id,
    created_ms_of,
    decode_base62,
    legacy_child_invocation_id,
    new_invocation_id,
    parse_restate_awakeable_id,
    restate_awakeable_id,
)
from handlers_sdk.protocol import awakeable_id, parse_awakeable_id

#: An id of the older base32hex form (time, then entropy) and its creation time.
LEGACY = "inv_06h10pn5ug0kun4knfugrrgr5k"
LEGACY_MS = 1_795_571_508_724


def restate_parse(inv: str) -> tuple[int, int]:
    """What Restate's ``InvocationId::from_str`` does (crates/types id_util + identifiers): the
    ``inv`` resource, ``_``, version ``1``, then each field read in its fixed width, zeros trimmed,
    base62-decoded with the ``0-9a-zA-Z`` alphabet and refused past its integer type."""
    prefix, _, rest = inv.partition("_")
    assert prefix == "inv" and rest[0] == "1", inv
    assert len(rest) == 1 + 11 + 22, inv  # the decoder reads exactly these widths
    assert set(rest[1:]) <= set(BASE62), inv
    partition_key, uuid = decode_base62(rest[1:12]), decode_base62(rest[12:])
    assert partition_key < 2**64 and uuid < 2**128, inv
    return partition_key, uuid


def restate_display(partition_key: int, uuid: int) -> str:
    return "inv_1" + base62_fixed(partition_key, 11) + base62_fixed(uuid, 22)


def test_base62_matches_restates_deployment_id_width() -> None:
    assert base62_fixed(0, 22) == "0" * 22
    assert base62_fixed(2**128 - 1, 22) == "7N42dgm5tFLK9N8MT7fHC7"
    assert decode_base62("7N42dgm5tFLK9N8MT7fHC7") == 2**128 - 1
    with pytest.raises(ValueError):
        base62_fixed(2**128, 21)
    with pytest.raises(ValueError):
        decode_base62("a-b")


@pytest.mark.parametrize("ms", [0, 1, 1_700_000_000_000, 2**48 - 1, 2**60])
def test_new_ids_parse_in_restates_format_and_print_back_the_same(ms: int) -> None:
    for entropy in (bytes(10), b"\xff" * 10, random.Random(ms).randbytes(10)):
        inv = new_invocation_id(ms, entropy)
        assert INVOCATION_ID_PATTERN.fullmatch(inv), inv
        assert restate_display(*restate_parse(inv)) == inv


def test_children_parse_in_restates_format_and_print_back_the_same() -> None:
    for parent in (new_invocation_id(1_700_000_000_000, bytes(10)), LEGACY, "inv_y3dnx7wmqvub5h7zx3h3wdifga"):
        for index in range(100):
            child = child_invocation_id(parent, index)
            assert INVOCATION_ID_PATTERN.fullmatch(child), child
            assert restate_display(*restate_parse(child)) == child
            assert child == child_invocation_id(parent, index)  # deterministic: replays derive it again


def test_new_ids_sort_by_creation_as_strings() -> None:
    rng = random.Random(7)
    times = sorted(rng.randrange(0, 2**48) for _ in range(3000))
    times += list(range(1_700_000_000_000, 1_700_000_004_096))  # every digit rolls over
    times.sort()
    ids = [new_invocation_id(t, rng.randbytes(10)) for t in times]
    assert [t for _, t in sorted(zip(ids, times, strict=True))] == times


def test_new_ids_sort_after_the_older_time_ordered_ones() -> None:
    assert new_invocation_id(0, bytes(10)) > LEGACY


def test_creation_time_is_read_back_from_every_form() -> None:
    assert created_ms_of(new_invocation_id(1_700_000_000_123, b"\x07" * 10)) == 1_700_000_000_123
    assert created_ms_of(LEGACY) == LEGACY_MS
    assert created_ms_of("inv_y3dnx7wmqvub5h7zx3h3wdifga") is None  # an old child: a digest
    assert created_ms_of("inv_1" + "Z" * 33) is None  # Restate's own: a partition key, not a time
    assert created_ms_of("nope") is None


def test_a_child_carries_its_parents_creation_time_so_it_lists_next_to_it() -> None:
    parent = new_invocation_id(1_700_000_000_000, bytes(10))
    child = child_invocation_id(parent, 3)
    assert child[:16] == parent[:16]  # inv_1 + the time field
    assert created_ms_of(child) == 1_700_000_000_000
    assert created_ms_of(child_invocation_id(LEGACY, 0)) == LEGACY_MS
    assert created_ms_of(child_invocation_id("inv_y3dnx7wmqvub5h7zx3h3wdifga", 0)) == 0


def test_the_older_child_rule_is_kept_for_sdks_not_upgraded() -> None:
    assert legacy_child_invocation_id(LEGACY, 0) == "inv_y3dnx7wmqvub5h7zx3h3wdifga"  # docs/protocol.md
    assert legacy_child_invocation_id(LEGACY, 0) != child_invocation_id(LEGACY, 0)


@pytest.mark.parametrize(
    "text",
    ["inv_", "inv_1", "inv_1" + "a" * 32, "inv_1" + "a" * 34, "inv_2" + "a" * 33, "inv_1" + "-" * 33,
     "inv_" + "A" * 26, "dp_1" + "a" * 22],
)  # fmt: skip
def test_malformed_ids_do_not_match(text: str) -> None:
    assert INVOCATION_ID_PATTERN.fullmatch(text) is None


def test_new_invocation_id_needs_80_bits_of_entropy() -> None:
    with pytest.raises(ValueError):
        new_invocation_id(1, bytes(9))


# -- awakeable ids in Restate's form ----------------------------------------------------------


def restate_awakeable(inv: str, index: int) -> str:
    """What Restate's ``AwakeableIdentifier`` prints (crates/types identifiers, id_util,
    base62_util): ``prom_1``, then URL-safe base64 without padding of the invocation id's bytes
    (partition key u64 BE, uuid u128 BE) and the entry index (u32 BE), where each integer is what
    ``IdStrCursor::decode_next`` read from the text: ``from_be`` of the base62 value, a byte swap
    on the little-endian machines Restate runs on."""
    partition_key, uuid = restate_parse(inv)
    partition_key = int.from_bytes(partition_key.to_bytes(8, "little"), "big")  # from_be on LE
    uuid = int.from_bytes(uuid.to_bytes(16, "little"), "big")
    raw = struct.pack(">Q", partition_key) + uuid.to_bytes(16, "big") + struct.pack(">I", index)
    return "prom_1" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: An invocation id and its awakeable at entry 1 as Restate's CLI 1.7.12 printed it
#: (``restate invocations describe``).
CLI_INVOCATION = "inv_1000mx6sg5vv0357YwgVb2ccaBoz8pfvbe"
CLI_AWAKEABLE = "prom_1dYjceCxIAAAMBw0-n1cocLyby4UzOaIBAAAAAQ"


def test_an_awakeable_prints_as_restates_cli_shows_it() -> None:
    assert restate_awakeable_id(CLI_INVOCATION, 1) == restate_awakeable(CLI_INVOCATION, 1) == CLI_AWAKEABLE
    assert parse_restate_awakeable_id(CLI_AWAKEABLE) == (CLI_INVOCATION, 1)


@pytest.mark.parametrize("index", [0, 1, 7, 2**32 - 1])
def test_restates_awakeable_id_names_the_same_invocation_and_entry(index: int) -> None:
    for inv in (new_invocation_id(1_700_000_000_000, random.Random(index).randbytes(10)),
                child_invocation_id(new_invocation_id(5, bytes(10)), 3)):  # fmt: skip
        restate = restate_awakeable_id(inv, index)
        assert restate == restate_awakeable(inv, index)
        assert parse_restate_awakeable_id(restate) == (inv, index)
        # The ingress reads either form as the same awakeable, padded or not (as Restate does).
        assert parse_awakeable_id(restate) == parse_awakeable_id(awakeable_id(inv, index)) == (inv, index)
        assert parse_awakeable_id(restate + "=" * (-len(restate.removeprefix("prom_1")) % 4)) == (inv, index)


def test_ids_without_a_binary_form_have_no_restate_awakeable_id() -> None:
    assert restate_awakeable_id(LEGACY, 1) is None  # the older forms
    assert restate_awakeable_id(legacy_child_invocation_id(LEGACY, 1), 1) is None
    assert restate_awakeable_id("inv_1" + "Z" * 33, 1) is None  # fields past u64 / u128
    inv = new_invocation_id(1, bytes(10))
    assert restate_awakeable_id(inv, -1) is None and restate_awakeable_id(inv, 2**32) is None


_GOOD = restate_awakeable_id(new_invocation_id(1_700_000_000_000, bytes(range(10))), 4) or ""


@pytest.mark.parametrize(
    "text",
    [
        "prom_1", "prom_2" + _GOOD[6:], "prom_" + _GOOD[6:], "sign_1" + _GOOD[6:], "prom_1" + _GOOD[7:],
        _GOOD + "A", _GOOD[:-1], _GOOD + "=", _GOOD + "===", _GOOD[:-1] + "h",  # trailing bits set
        _GOOD.replace("_", "/", 2), _GOOD[:-2] + "+A", _GOOD + "\u00e9", "prom_1" + "A" * 37 + "=",
        "prom_1" + base64.urlsafe_b64encode(bytes(24)).decode(),  # no entry index
    ],
)  # fmt: skip
def test_malformed_restate_awakeable_ids_are_refused(text: str) -> None:
    assert parse_restate_awakeable_id(text) is None
    assert parse_awakeable_id(text) is None
