"""HTTP helpers shared by the ingress and admin apps: bounded body reads, JSON responses, errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_core.errors import (
    ClientClosed,
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ProxyError,
    RequestTimeout,
    UnsupportedMediaType,
    error_body,
)

__all__ = ["Cors", "check_json", "exception_handlers", "json_response", "read_body"]

log = logging.getLogger("proxy.api.http")
_encoder = msgspec.json.Encoder()


async def read_body(request: Request, limit: int, timeout: float, drain: int = 0) -> bytes:
    """The whole request body, or PayloadTooLarge past `limit` bytes, or RequestTimeout.

    A client that sends its whole body before it reads the answer (urllib, requests, httpx: none
    waits for ``100 Continue``) must still get the 413. On a connection that stays open after the
    answer, uvicorn reads and drops the rest of the body by itself, so the 413 goes at once. On one
    that closes after it (``Connection: close``, as urllib sends, or HTTP/1.0) the close with unread
    data would be a reset, so the rest is read and dropped here first, up to `drain` bytes in all
    and within `timeout`. A client that asked for ``Expect: 100-continue`` is answered at once.

    Raises:
        PayloadTooLarge: the body (declared or received) is over `limit`.
        RequestTimeout: the body did not arrive within `timeout` seconds.
        ClientClosed: the client went away before sending the whole body.
    """
    length = request.headers.get("content-length")
    declared = 0
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise InvalidJson("invalid content-length header") from None
    too_large = PayloadTooLarge(f"request body over the limit of {limit} bytes")
    tokens = {token.strip() for token in request.headers.get("connection", "").lower().split(",")}
    closes = "close" in tokens or request.scope.get("http_version") == "1.0"
    if not closes or request.headers.get("expect", "").lower() == "100-continue":
        drain = 0
    if declared > limit and declared > drain:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > drain and size > limit:
                    raise too_large  # past the drain bound too: give up on the client reading it
                if size <= limit and declared <= limit:
                    chunks.append(chunk)
    except TimeoutError:
        if size > limit or declared > limit:
            raise too_large from None
        raise RequestTimeout(f"request body not received within {timeout:g}s") from None
    except ClientDisconnect:
        # Nobody is left to answer: one quiet line, no traceback (it is the client's doing).
        log.debug("client went away after %d body bytes: %s %s", size, request.method, request.url.path)
        raise ClientClosed("the client closed the connection before sending the whole body") from None
    if size > limit or declared > limit:
        raise too_large
    return b"".join(chunks)


_JSON_TYPES = ("application/json", "text/json")


def check_json(request: Request, body: bytes, content_type: bool = True) -> None:
    """Reject a body that is not JSON: a wrong content type (415; not checked without
    `content_type`) or invalid JSON (400)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and body and media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"content-type {media_type!r} is not JSON; send application/json")
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
        headers = {"x-restate-error-source": source}
        if isinstance(exc, Overloaded):
            headers["retry-after"] = str(exc.retry_after)
        return Response(exc.body(source), status_code=exc.status, media_type="application/json", headers=headers)

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
        return Response(
            mapped.body(source),
            status_code=mapped.status,
            media_type="application/json",
            headers={"x-restate-error-source": source},
        )

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


_CORS_VARY = (b"vary", b"origin, access-control-request-method, access-control-request-headers")
_CORS_ANSWERED = frozenset({b"access-control-allow-origin", b"access-control-allow-credentials"})


class Cors:
    """CORS as Restate's ingress answers it (tower-http's ``CorsLayer::very_permissive``).

    Every ``OPTIONS`` request is a preflight, answered here with 200 and an empty body: the
    request's ``Origin``, ``Access-Control-Request-Method`` and ``Access-Control-Request-Headers``
    are mirrored back as allowed, with credentials allowed. Every other answer gets the mirrored
    ``access-control-allow-origin``, ``access-control-allow-credentials: true`` and ``vary``.
    No header is exposed (as in Restate).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        added: list[tuple[bytes, bytes]] = [(b"access-control-allow-credentials", b"true"), _CORS_VARY]
        origin = request_headers.get("origin")
        if origin is not None:
            added.append((b"access-control-allow-origin", origin.encode("latin-1")))
        if scope["method"] == "OPTIONS":
            for asked, allowed in (
                ("access-control-request-method", b"access-control-allow-methods"),
                ("access-control-request-headers", b"access-control-allow-headers"),
            ):
                value = request_headers.get(asked)
                if value is not None:
                    added.append((allowed, value.encode("latin-1")))
            await send({"type": "http.response.start", "status": 200, "headers": [*added, (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _CORS_ANSWERED]
                message = {**message, "headers": kept + added}
            await send(message)

        await self.app(scope, receive, send_with_cors)
