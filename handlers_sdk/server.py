"""The handler service as a raw ASGI app: ``/invoke/{service}/{handler}``, ``/discovery``, ``/health``.

With identity keys (``identity_keys=[...]`` or ``HANDLERS_SDK_IDENTITY_KEYS``) every request but
``GET /health`` must carry the proxy's signature (`handlers_sdk.identity`): anything else gets 401
before it is routed, so an unsigned caller learns nothing, not even which services are served.
``/health`` stays open: liveness probes carry no signature and the answer tells nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

import httpx
import msgspec

from handlers_sdk import tracing
from handlers_sdk.ack import AckClient
from handlers_sdk.attempt import run_attempt
from handlers_sdk.identity import (
    DEPLOYMENT_URL_ENV,
    IDENTITY_KEYS_ENV,
    Claims,
    IdentityError,
    Verifier,
    keys_from_env,
)
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
#: The request headers the identity check reads.
_IDENTITY_HEADERS = frozenset({b"x-restate-signature-scheme", b"x-restate-jwt-v1", b"host"})

log = logging.getLogger("handlers_sdk.server")


class HandlerApp:
    """An ASGI app serving a set of services to the proxy."""

    def __init__(
        self,
        services: Iterable[Service],
        *,
        mode: str = "ack",
        ack_transport: httpx.AsyncBaseTransport | None = None,
        identity_keys: Sequence[str] | None = None,
        deployment_url: str = "",
    ) -> None:
        if mode not in ("ack", "suspend"):
            raise ValueError("mode must be 'ack' or 'suspend'")
        keys = keys_from_env() if identity_keys is None else list(identity_keys)
        #: Checks the proxy's signature on every request; None: requests are not checked.
        deployment_url = deployment_url or os.environ.get(DEPLOYMENT_URL_ENV, "")
        self.verifier = Verifier(keys, deployment_url) if keys else None
        # Warned when served (lifespan startup, or the first request under a server without
        # lifespan), not when built: a module may build several apps and serve one.
        self._warned = self.verifier is not None
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
        if not self._warned:
            self._warn_unverified()
        method, path = scope["method"], scope["path"]
        if path == "/health" and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}')
            return
        claims: Claims | None = None
        if self.verifier is not None:
            # The body is checked once read: an unsigned request is refused before its body is.
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _IDENTITY_HEADERS}
            try:
                claims = self.verifier.verify_headers(method, path, headers)
            except IdentityError as exc:
                await _error(send, 401, str(exc))
                return
        if path == "/discovery" and method == "GET":
            if claims is not None and not await self._body_verifies(claims, b"", send):
                return
            await _respond(send, 200, self._manifest)
        elif path.startswith("/invoke/"):
            if method != "POST":
                await _error(send, 405, "method not allowed")
                return
            if tracing.enabled:
                await tracing.continued(scope["headers"], self._invoke(path, receive, send, claims))
            else:
                await self._invoke(path, receive, send, claims)
        else:
            await _error(send, 404, f"no route {path}")

    def _warn_unverified(self) -> None:
        self._warned = True
        log.warning(
            "no identity keys: this handler service runs whatever anyone who can reach it sends; "
            "pass identity_keys=[...] (the proxy's public key: GET :9070/identity) or set %s",
            IDENTITY_KEYS_ENV,
        )

    async def _body_verifies(self, claims: Claims, body: bytes, send: Send) -> bool:
        assert self.verifier is not None
        try:
            self.verifier.verify_body(claims, body)
        except IdentityError as exc:
            await _error(send, 401, str(exc))
            return False
        return True

    async def _invoke(self, path: str, receive: Receive, send: Send, claims: Claims | None) -> None:
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
        if claims is not None and not await self._body_verifies(claims, body, send):
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
                if not self._warned:
                    self._warn_unverified()
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
    identity_keys: Sequence[str] | None = None,
    deployment_url: str = "",
) -> HandlerApp:
    """Build the ASGI app that serves `services`: ``uvicorn module:application``.

    Args:
        services: the services (and objects, workflows) to serve.
        mode: ``"ack"`` posts each new step to the proxy and continues; ``"suspend"`` ends the
            request after each new step and is re-invoked with it in the journal.
        ack_transport: an httpx transport for the step acks (tests route them in-process).
        identity_keys: the proxy's public keys (``publickeyv1_...``, two during a rotation):
            every request but ``/health`` must be signed by one of them, else 401. None: read
            ``HANDLERS_SDK_IDENTITY_KEYS``; no keys at all: nothing is checked (a warning at start).
        deployment_url: this service's URL as registered with the proxy, which the signature
            names (set it behind a router that rewrites the Host header). Empty: read
            ``HANDLERS_SDK_DEPLOYMENT_URL``; empty too: the signature must name the host and
            port the request was sent to.

    Raises:
        ValueError: an identity key is not a ``publickeyv1_`` Ed25519 key.
    """
    return HandlerApp(
        services, mode=mode, ack_transport=ack_transport, identity_keys=identity_keys, deployment_url=deployment_url
    )
