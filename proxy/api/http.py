"""HTTP helpers shared by the ingress and admin apps: bounded body reads, JSON responses, errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from durable_core.errors import (
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    RequestTimeout,
    UnsupportedMediaType,
    error_body,
)

__all__ = ["check_json", "exception_handlers", "json_response", "read_body"]

log = logging.getLogger("proxy.api.http")
_encoder = msgspec.json.Encoder()


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole request body, or PayloadTooLarge past `limit` bytes, or RequestTimeout."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
        except ValueError:
            raise InvalidJson("invalid content-length header") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {timeout:g}s") from None
    return b"".join(chunks)


_JSON_TYPES = ("application/json", "text/json")


def check_json(request: Request, body: bytes) -> None:
    """Reject a body that is not JSON: a wrong content type (415) or invalid JSON (400)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and content_type and content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"content-type {content_type!r} is not JSON; send application/json")
    if not body:
        return
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        # msgspec raises RecursionError on deeply nested input such as '[' * 100000, and
        # UnicodeDecodeError (not DecodeError) on invalid UTF-8 inside a string.
        message = "JSON nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidJson(f"invalid JSON body: {message}") from None


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response from plain data or Structs."""
    return Response(_encoder.encode(value), status_code=status, headers=headers, media_type="application/json")


def _proxy_error(source: str) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return Response(
            exc.body(source),
            status_code=exc.status,
            media_type="application/json",
            headers={"x-restate-error-source": source},
        )

    return handle


def _http_error(source: str) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        mapped: ProxyError
        if exc.status_code == 405:
            mapped = MethodNotAllowed(f"method {request.method} not allowed on {request.url.path}")
        elif exc.status_code == 404:
            mapped = NotFound(f"no route {request.url.path}")
        else:
            mapped = ProxyError(str(exc.detail))
            mapped.status = exc.status_code
        return Response(mapped.body(source), status_code=mapped.status, media_type="application/json")

    return handle


def _internal(source: str) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = error_body(500, "internal", f"internal error: {type(exc).__name__}", source)
        return Response(body, status_code=500, media_type="application/json")

    return handle


def exception_handlers(source: str) -> dict[Any, Any]:
    """Starlette exception handlers mapping every error to the one JSON shape."""
    return {ProxyError: _proxy_error(source), HTTPException: _http_error(source), Exception: _internal(source)}
