"""Typed (de)serialization of handler inputs, outputs, step values and state via JSON.

msgspec decodes and encodes what it knows: builtins, msgspec Structs, dataclasses, TypedDicts,
enums, unions and containers of them. Pydantic v2 models (and types built from them) go through
pydantic, which is not a dependency: it is only used when the annotation is a pydantic type, and
then the author's code has imported it already.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["from_json", "to_json"]


def _enc_hook(value: Any) -> Any:
    """Values msgspec does not know: pydantic models become their JSON-mode dump."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and "pydantic" in sys.modules:
        return dump(mode="json")
    raise NotImplementedError(f"cannot encode {type(value).__name__} as JSON")


def _dec_hook(type_hint: Any, value: Any) -> Any:
    """Types msgspec does not know: a pydantic model validates the decoded JSON itself (its
    ValidationError is a ValueError, which msgspec reports as a ValidationError at the value's path)."""
    if type_hint is object:
        return value  # any JSON, as without a hook
    validate = getattr(type_hint, "model_validate", None)
    if callable(validate) and "pydantic" in sys.modules:
        return validate(value)
    # A TypeError becomes msgspec's ValidationError, the message it gives without a hook.
    raise TypeError(f"Expected `{getattr(type_hint, '__name__', type_hint)}`, got `{type(value).__name__}`")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
#: The decoding function of each type seen (msgspec's decoder, or pydantic's adapter).
_decoders: dict[Any, Callable[[bytes], Any]] = {}


def to_json(value: Any) -> bytes:
    """Encode a step or handler value as JSON (plain data, Structs, dataclasses, pydantic models...).

    Raises:
        TypeError: a value of a type neither msgspec nor pydantic can encode.
    """
    try:
        return _encoder.encode(value)
    except NotImplementedError as exc:
        raise TypeError(str(exc)) from None


def _pydantic_decoder(type_hint: Any) -> Callable[[bytes], Any] | None:
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:
        return None
    try:
        adapter = pydantic.TypeAdapter(type_hint)
    except Exception:  # noqa: BLE001 - a type pydantic does not know either
        return None
    validation_error: type[Exception] = pydantic.ValidationError

    def decode(data: bytes) -> Any:
        try:
            return adapter.validate_json(data)
        except validation_error as exc:
            # One error type for callers: an input that does not validate is a 400 however decoded.
            raise msgspec.ValidationError(str(exc)) from None

    return decode


def _decoder(type_hint: Any) -> Callable[[bytes], Any]:
    try:
        return _decoders[type_hint]
    except (KeyError, TypeError):
        pass
    decode: Callable[[bytes], Any]
    try:
        decode = msgspec.json.Decoder(type_hint, dec_hook=_dec_hook).decode
    except TypeError:  # not a type msgspec knows (a pydantic model, say)
        fallback = _pydantic_decoder(type_hint)
        if fallback is None:
            raise
        decode = fallback
    try:
        _decoders[type_hint] = decode
    except TypeError:  # unhashable annotation: decoded without a cache
        pass
    return decode


def from_json(data: bytes, type_hint: Any = Any) -> Any:
    """Decode JSON into `type_hint` (``Any`` gives plain data).

    Raises:
        msgspec.DecodeError: not JSON.
        msgspec.ValidationError: JSON that does not fit `type_hint` (with the validation message).
        TypeError: a type neither msgspec nor pydantic can decode into.
    """
    if type_hint is Any:
        return msgspec.json.decode(data)
    return _decoder(type_hint)(data)
