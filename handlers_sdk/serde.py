"""Typed (de)serialization of handler inputs, outputs and step values via msgspec JSON."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["from_json", "to_json"]

_encoder = msgspec.json.Encoder()


def to_json(value: Any) -> bytes:
    """Encode a step or handler value as JSON (msgspec Structs, dataclasses and plain data)."""
    return _encoder.encode(value)


def from_json(data: bytes, type_: Any = Any) -> Any:
    """Decode JSON into `type_` (``Any`` gives plain data)."""
    if type_ is Any:
        return msgspec.json.decode(data)
    return msgspec.json.decode(data, type=type_)
