"""handlers_sdk/protocol.py: the wire contract round-trips, its unions are tagged, bad input is rejected."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest

from handlers_sdk import protocol
from handlers_sdk.protocol import (
    ACK_PATH,
    NULL,
    PROTOCOL_VERSION,
    AppendRequest,
    AppendResponse,
    Completed,
    Entry,
    Errored,
    Failed,
    Failure,
    HandlerInfo,
    InvokeRequest,
    JournalItem,
    Manifest,
    Outcome,
    RunEntry,
    ServiceInfo,
    Suspended,
    decode_append,
    decode_entry,
    decode_invoke,
    decode_manifest,
    decode_outcome,
    encode,
)

DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError)

WIRE_STRUCTS = sorted(
    (obj for obj in vars(protocol).values() if isinstance(obj, type) and issubclass(obj, msgspec.Struct)),
    key=lambda t: t.__name__,
)


def _sample(type_info: msgspec.inspect.Type) -> Any:
    """A value of a wire type, built from its msgspec description (required fields only)."""
    t = type_info
    if isinstance(t, msgspec.inspect.StrType):
        return "x"
    if isinstance(t, msgspec.inspect.IntType):
        return 1
    if isinstance(t, msgspec.inspect.BoolType):
        return True
    if isinstance(t, msgspec.inspect.FloatType):
        return 1.5
    if isinstance(t, msgspec.inspect.RawType):
        return msgspec.Raw(b'{"k":[1,2]}')
    if isinstance(t, msgspec.inspect.LiteralType):
        return t.values[0]
    if isinstance(t, msgspec.inspect.UnionType):
        return _sample(t.types[0])
    if isinstance(t, msgspec.inspect.ListType):
        return [_sample(t.item_type)]
    if isinstance(t, msgspec.inspect.DictType):
        return {_sample(t.key_type): _sample(t.value_type)}
    if isinstance(t, msgspec.inspect.StructType):
        return _build(t)
    raise AssertionError(f"no sample for {t!r}")


def _build(info: msgspec.inspect.StructType) -> msgspec.Struct:
    kwargs = {f.name: _sample(f.type) for f in info.fields if f.required}
    return info.cls(**kwargs)


def _wire_equal(a: Any, b: Any) -> bool:
    # msgspec.Raw has no value equality; compare encoded forms.
    return encode(a) == encode(b)


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [c for c in WIRE_STRUCTS if not c.__name__.startswith("_")], ids=lambda c: c.__name__)
def test_every_wire_struct_round_trips(cls: type[msgspec.Struct]) -> None:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    value = _build(info)
    data = encode(value)
    again = msgspec.json.decode(data, type=cls)
    assert type(again) is cls
    assert encode(again) == data


@pytest.mark.parametrize("cls", [c for c in WIRE_STRUCTS if not c.__name__.startswith("_")], ids=lambda c: c.__name__)
def test_wire_structs_are_frozen(cls: type[msgspec.Struct]) -> None:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    value = _build(info)
    assert cls.__struct_config__.frozen
    for field in info.fields:
        with pytest.raises(AttributeError):
            setattr(value, field.name, None)


def test_invoke_request_round_trip_keeps_raw_payloads_byte_for_byte() -> None:
    request = InvokeRequest(
        invocation_id="inv_1",
        service="Svc",
        handler="h",
        key="k",
        input=msgspec.Raw(b'{"b": 1,  "a": [1.0, "\\u00e9"]}'),
        journal=[
            JournalItem(index=0, entry=RunEntry(name="a", value=msgspec.Raw(b"1"))),
            JournalItem(index=2, entry=RunEntry(name="c", failure=Failure(code=418, message="teapot"))),
        ],
        attempt=3,
        token="tok",
        callback_url="http://proxy:9070",
        random_seed=2**63 - 1,
        headers={"x-a": "b"},
    )
    decoded = decode_invoke(encode(request))
    assert bytes(decoded.input) == b'{"b": 1,  "a": [1.0, "\\u00e9"]}'
    assert [item.index for item in decoded.journal] == [0, 2]
    first, second = (item.entry for item in decoded.journal)
    assert isinstance(first, RunEntry) and bytes(first.value) == b"1"
    assert isinstance(second, RunEntry) and second.failure == Failure(code=418, message="teapot")
    assert (decoded.attempt, decoded.token, decoded.random_seed, decoded.headers) == (3, "tok", 2**63 - 1, {"x-a": "b"})
    assert decoded.protocol_version == PROTOCOL_VERSION


def test_append_round_trip() -> None:
    request = AppendRequest(
        invocation_id="inv_1", attempt=2, token="t", index=5, entry=RunEntry(name="s", value=msgspec.Raw(b'"v"'))
    )
    assert _wire_equal(decode_append(encode(request)), request)
    assert msgspec.json.decode(encode(AppendResponse(index=5))) == {"index": 5}


def test_manifest_round_trip() -> None:
    manifest = Manifest(
        mode="suspend",
        services=[ServiceInfo(name="S", type="object", handlers=[HandlerInfo(name="h", kind="shared")])],
    )
    assert decode_manifest(encode(manifest)) == manifest


def test_defaults_are_left_off_the_wire() -> None:
    assert msgspec.json.decode(encode(RunEntry(name="a"))) == {"type": "run", "name": "a"}
    assert msgspec.json.decode(encode(Completed())) == {"type": "completed"}
    completed = decode_outcome(b'{"type":"completed"}')
    assert isinstance(completed, Completed) and msgspec.json.decode(completed.value) is None
    assert bytes(NULL) == b"null"


def test_ack_path() -> None:
    assert ACK_PATH.startswith("/") and not ACK_PATH.endswith("/")


# -- tagged unions ----------------------------------------------------------------------------


def _tags(union: Any) -> dict[str, type]:
    members = typing.get_args(union) or (union,)
    tags: dict[str, type] = {}
    for cls in members:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        assert info.tag_field == "type", cls
        assert isinstance(info.tag, str) and info.tag not in tags, f"bad or duplicate tag {info.tag!r}"
        tags[info.tag] = cls
    return tags


@pytest.mark.parametrize(
    ("outcome", "tag"),
    [
        (Completed(value=msgspec.Raw(b"[1]")), "completed"),
        (Failed(failure=Failure(code=400, message="bad")), "failed"),
        (Suspended(entries=[JournalItem(index=0, entry=RunEntry(name="a"))], waiting_on=[0]), "suspended"),
        (Errored(message="boom", behavior="pause", code=570, related_index=1, related_name="b"), "error"),
    ],
)
def test_outcomes_decode_to_their_variant(outcome: Outcome, tag: str) -> None:
    data = encode(outcome)
    assert msgspec.json.decode(data)["type"] == tag
    decoded = decode_outcome(data)
    assert type(decoded) is type(outcome)
    assert encode(decoded) == data


def test_outcome_tags_are_unique() -> None:
    assert set(_tags(Outcome)) == {"completed", "failed", "suspended", "error"}


def test_entry_tags_are_unique_and_decode_to_their_variant() -> None:
    tags = _tags(Entry)
    assert "run" in tags
    for tag, cls in tags.items():
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        value = _build(info)
        data = encode(value)
        assert msgspec.json.decode(data)["type"] == tag
        assert type(decode_entry(data)) is cls


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"bogus","name":"a"}',
        b'{"type":"RUN","name":"a"}',
        b'{"type":"","name":"a"}',
        b'{"type":1,"name":"a"}',
        b'{"name":"a"}',
    ],
)
def test_unknown_or_missing_entry_tags_are_rejected(data: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_entry(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"bogus"}',
        b'{"type":"Completed"}',
        b'{"type":null}',
        b'{"value":1}',
        b'{"type":"failed"}',
        b'{"type":"error"}',
        b'{"type":"completed","entries":[{"index":0,"entry":{"type":"bogus"}}]}',
        b'{"type":"completed","entries":[{"index":"0","entry":{"type":"run","name":"a"}}]}',
        b'{"type":"error","message":"m","behavior":"explode"}',
    ],
)
def test_bad_outcomes_are_rejected(data: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_outcome(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b'{"type":"completed","value":',
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe",
        b'{"type":"\xff","services":"\xff","invocation_id":"\xff","index":"\xff"}',
        b"null",
        b"[]",
    ],
)
@pytest.mark.parametrize("decode", [decode_outcome, decode_invoke, decode_append, decode_manifest, decode_entry])
def test_garbage_raises_only_decode_errors(decode: Any, data: bytes) -> None:
    # Every caller catches exactly these: anything else would be a 500 or a crashed attempt.
    with pytest.raises(DECODE_ERRORS):
        decode(data)


def test_invoke_request_requires_identity_fields() -> None:
    with pytest.raises(msgspec.ValidationError, match="token"):
        decode_invoke(b'{"invocation_id":"i","service":"s","handler":"h","attempt":1}')


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    # New fields go last with defaults: an old peer must ignore what it does not know.
    decoded = decode_outcome(b'{"type":"completed","value":1,"new_field":{"x":1}}')
    assert isinstance(decoded, Completed) and bytes(decoded.value) == b"1"


@pytest.mark.parametrize(
    "text", ["awk_abc_\u00b2", "awk_\u65e5_1", "awk_abc_\u0661", "awk_x_", "awk__1", "awk_a-b_1", "inv_abc_1"]
)
def test_parse_awakeable_id_refuses_what_is_not_an_ascii_id(text: str) -> None:
    """``str.isdigit`` holds for "²" and ``isalnum`` for "日": int() raised ValueError (a 500)."""
    assert protocol.parse_awakeable_id(text) is None


def test_parse_awakeable_id_inverts_awakeable_id() -> None:
    assert protocol.parse_awakeable_id(protocol.awakeable_id("inv_0abc", 7)) == ("inv_0abc", 7)
