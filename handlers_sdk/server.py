"""The handler service as a raw ASGI app: ``/invoke/{service}/{handler}``, ``/discovery``, ``/health``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import httpx
import msgspec

from handlers_sdk.ack import AckClient
from handlers_sdk.attempt import run_attempt
from handlers_sdk.protocol import PROTOCOL_VERSION, Manifest, decode_invoke, encode
from handlers_sdk.service import Service

__all__ = ["MAX_REQUEST_BYTES", "HandlerApp", "app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Largest invoke request accepted (the journal travels in the body).
MAX_REQUEST_BYTES = 256 * 1024 * 1024
_JSON = [(b"content-type", b"application/json")]


class HandlerApp:
    """An ASGI app serving a set of services to the proxy."""

    def __init__(
        self,
        services: Iterable[Service],
        *,
        mode: str = "ack",
        ack_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if mode not in ("ack", "suspend"):
            raise ValueError("mode must be 'ack' or 'suspend'")
        self.services = {s.name: s for s in services}
        self.mode = mode
        self.ack = AckClient(ack_transport)
        self._manifest = encode(
            Manifest(mode=mode, services=[s.info() for s in self.services.values()])  # type: ignore[arg-type]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # pragma: no cover - websockets are not served
            return
        method, path = scope["method"], scope["path"]
        if path == "/health" and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path == "/discovery" and method == "GET":
            await _respond(send, 200, self._manifest)
        elif path.startswith("/invoke/"):
            if method != "POST":
                await _error(send, 405, "method not allowed")
                return
            await self._invoke(path, receive, send)
        else:
            await _error(send, 404, f"no route {path}")

    async def _invoke(self, path: str, receive: Receive, send: Send) -> None:
        parts = path.split("/")
        if len(parts) != 4:
            await _error(send, 404, f"bad invoke path {path}")
            return
        service = self.services.get(parts[2])
        handler = service.handlers.get(parts[3]) if service else None
        if handler is None:
            await _error(send, 404, f"no handler {parts[2]}/{parts[3]}")
            return
        body = await _read_body(receive)
        if body is None:
            await _error(send, 413, "invoke request too large")
            return
        try:
            request = decode_invoke(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            await _error(send, 400, f"bad invoke request: {exc}")
            return
        if request.protocol_version != PROTOCOL_VERSION:
            await _error(send, 400, f"unsupported protocol version {request.protocol_version}")
            return
        outcome = await run_attempt(handler, request, self.mode, self.ack)
        await _respond(send, 200, encode(outcome))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.ack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, message: str) -> None:
    await _respond(send, status, msgspec.json.encode({"code": status, "message": message}))


def app(
    services: Iterable[Service],
    *,
    mode: str = "ack",
    ack_transport: httpx.AsyncBaseTransport | None = None,
) -> HandlerApp:
    """Build the ASGI app that serves `services`: ``uvicorn module:application``.

    Args:
        services: the services (and objects, workflows) to serve.
        mode: ``"ack"`` posts each new step to the proxy and continues; ``"suspend"`` ends the
            request after each new step and is re-invoked with it in the journal.
        ack_transport: an httpx transport for the step acks (tests route them in-process).
    """
    return HandlerApp(services, mode=mode, ack_transport=ack_transport)
