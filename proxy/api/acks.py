"""The step-ack callback: the app handler services post new journal entries to (ack mode).

It is served on a listener of its own (``--callback-port``), apart from the admin API, so that
handlers reach it without reaching the admin API. Its authentication is the attempt's token in
every append: the invoker journals an entry only from the live attempt with that token (409
`Fenced` otherwise, naming the attempt but never the token).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.errors import BadRequest, ProxyError, RequestTimeout
from handlers_sdk.protocol import ACK_PATH, AppendResponse, decode_append, encode
from proxy import faults
from proxy.api.http import exception_handlers, json_response, read_body
from proxy.engine.runtime import Runtime

__all__ = ["AckFastPath", "append_endpoint", "create_callback"]

#: Room for the envelope around an entry (ids, token, index) on top of max_entry_bytes.
_ENVELOPE = 4096


async def _append(runtime: Runtime, body: bytes, started: float) -> bytes:
    """Decode one append, journal it, and return the answer's body. Returns after commit.

    Raises:
        ProxyError: a bad request (400) or what the invoker refused (409 fenced, 413, 507...).
    """
    try:
        append_request = decode_append(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
        raise BadRequest(f"bad append request: {exc}") from None
    journaled = await runtime.append(append_request)
    runtime.metrics.step_seconds.observe(time.perf_counter() - started)
    faults.hit("callbacks.before_response")
    return encode(AppendResponse(index=append_request.index, entry=journaled))


def append_endpoint(runtime: Runtime):  # type: ignore[no-untyped-def]
    """The Starlette endpoint for ``POST /internal/v1/entries``."""
    settings = runtime.settings

    async def append(request: Request) -> Response:
        started = time.perf_counter()
        body = await read_body(request, settings.max_entry_bytes + _ENVELOPE, settings.body_read_timeout)
        return Response(await _append(runtime, body, started), media_type="application/json")

    return append


def create_callback(runtime: Runtime) -> Starlette:
    """The callback app: ``POST /internal/v1/entries`` (through `AckFastPath`) and ``GET /health``."""

    async def health(request: Request) -> Response:
        return json_response({"status": "ok" if runtime.started else "starting"})

    routes = [Route(ACK_PATH, append_endpoint(runtime), methods=["POST"]), Route("/health", health, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers=exception_handlers("callback"))
    app.add_middleware(AckFastPath, runtime=runtime)  # step acks skip the router (the hot path)
    return app


_JSON_HEADERS = [(b"content-type", b"application/json")]
_ERROR_HEADERS = [*_JSON_HEADERS, (b"x-restate-error-source", b"callback")]


class AckFastPath:
    """ASGI middleware that serves well-formed ``POST /internal/v1/entries`` without Starlette's
    router, Request and Response objects (the proxy's hottest request: one per step).

    Same answers as `append_endpoint` (200 with the index after the commit; ProxyErrors as the
    callback app's JSON errors). Anything unusual (no or too large content-length, chunked bodies)
    goes on to the Starlette endpoint, which stays the reference behaviour.
    """

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.limit = runtime.settings.max_entry_bytes + _ENVELOPE
        self.timeout = runtime.settings.body_read_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != ACK_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
                break
        if not 0 <= length <= self.limit:
            await self.app(scope, receive, send)
            return
        runtime = self.runtime
        started = time.perf_counter()
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # nobody to answer; nothing was written
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            timeout = RequestTimeout(f"request body not received within {self.timeout:g}s")
            await _send(send, timeout.status, _ERROR_HEADERS, timeout.body("callback"))
            return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            answer = await _append(runtime, body, started)
        except ProxyError as exc:
            await _send(send, exc.status, _ERROR_HEADERS, exc.body("callback"))
            return
        await _send(send, 200, _JSON_HEADERS, answer)


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode("ascii"))],
        }
    )
    await send({"type": "http.response.body", "body": body})
