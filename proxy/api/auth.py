"""Authentication of the admin and ingress APIs: ASGI middleware that checks the caller's secret
before any route runs.

* **Admin API** (`AdminAuth`): ``Authorization: Bearer <token>``, one of the admin tokens. Open
  without one: ``GET /health`` (probes), the web page's static files (``/``, ``/ui``, ``/ui/*``:
  the page asks for the token itself) and the handlers' step-ack callback
  (``POST /internal/v1/entries``), which is fenced by each attempt's own token instead.
* **Ingress API** (`IngressAuth`, only when ``--ingress-keys-file`` is set): ``x-api-key: <key>``
  or ``Authorization: Bearer <key>``. Open without one: ``GET /health``, ``GET /restate/health``
  and CORS preflights (``OPTIONS``, answered by `proxy.api.http.Cors`). The header that carried
  the key is removed before the request goes on, so the key is never stored with an invocation
  nor forwarded to a handler.

A missing, malformed or wrong secret gets ``401`` with the API's JSON error and a
``WWW-Authenticate: Bearer`` challenge (RFC 6750; Restate answers 401 for both cases too). No
answer or log line says which secrets exist or echoes the one sent.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from durable_core.errors import Unauthorized
from handlers_sdk.protocol import ACK_PATH
from proxy.api.http import Cors
from proxy.credentials import KeyRing
from proxy.engine.metrics import Counter

__all__ = ["AdminAuth", "IngressAuth", "bearer_token"]

log = logging.getLogger("proxy.api.auth")

_VERSION_PREFIX = re.compile(r"^/v[0-9]+(?=/|$)")
_BEARER = re.compile(rb"^[Bb][Ee][Aa][Rr][Ee][Rr] +([\x21-\x7e]+) *$")


def bearer_token(value: bytes) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` value (any case of ``Bearer``), or None."""
    match = _BEARER.match(value)
    return match.group(1) if match else None


def _headers_named(scope: Any, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key.lower() == name]


def _without(scope: Any, name: bytes) -> Any:
    """`scope` without the request headers called `name`."""
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != name]}


async def _send_401(send: Any, source: str, message: str, invalid: bool) -> None:
    body = Unauthorized(message).body(source)
    challenge = f'Bearer realm="{source}"' + (', error="invalid_token"' if invalid else "")
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-restate-error-source", source.encode("ascii")),
                (b"www-authenticate", challenge.encode("ascii")),
                (b"cache-control", b"no-store"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _check_bearer(scope: Any, keys: KeyRing, what: str) -> tuple[str | None, bool]:
    """None when the request's ``Authorization: Bearer`` carries one of `keys`, else the 401's message;
    and whether the token was well-formed but wrong (RFC 6750's ``invalid_token``)."""
    values = _headers_named(scope, b"authorization")
    if not values:
        return f"this API needs an {what}: send Authorization: Bearer <token>", False
    token = bearer_token(values[0]) if len(values) == 1 else None
    if token is None:
        return f"malformed Authorization header: expected one 'Bearer <token>' carrying {what}", False
    if not keys.matches(token):
        return f"the Authorization header does not carry a valid {what}", True
    return None, False


class AdminAuth:
    """ASGI middleware: every admin request but the open ones (module docstring) needs an admin token.

    With an empty `keys` (no token configured) every request goes through.
    """

    def __init__(self, app: Any, keys: KeyRing, refused: Counter | None = None) -> None:
        self.app = app
        self.keys = keys
        self.refused = refused

    @staticmethod
    def is_open(method: str, path: str) -> bool:
        """Whether ``method path`` is served without a token."""
        path = _VERSION_PREFIX.sub("", path, count=1) or "/"
        if path == ACK_PATH:
            return True  # fenced by the attempt's own token; may be served on its own listener too
        if method not in ("GET", "HEAD"):
            return False
        return path in ("/health", "/", "/ui") or path.startswith("/ui/")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.keys.enabled or self.is_open(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        problem, invalid = _check_bearer(scope, self.keys, "admin token")
        if problem is not None:
            log.debug("admin: 401 for %s %s: %s", scope["method"], scope["path"], problem)
            if self.refused is not None:
                self.refused.inc("admin")
            await _send_401(send, "admin", problem, invalid)
            return
        await self.app(_without(scope, b"authorization"), receive, send)


class IngressAuth:
    """ASGI middleware: every ingress request but the open ones (module docstring) needs an API key.

    Put it outside `Cors`: preflights pass through to it, and the 401s carry the CORS headers too.
    With an empty `keys` (no keys file) every request goes through.
    """

    def __init__(self, app: Any, keys: KeyRing, refused: Counter | None = None) -> None:
        self.app = app
        self.keys = keys
        self.refused = refused
        self._reject = Cors(self._unauthorized)

    @staticmethod
    def is_open(method: str, path: str) -> bool:
        """Whether ``method path`` is served without a key."""
        if method == "OPTIONS":
            return True
        return method in ("GET", "HEAD") and path.rstrip("/") in ("/health", "/restate/health")

    async def _unauthorized(self, scope: Any, receive: Any, send: Any) -> None:
        await _send_401(send, "ingress", scope["proxy.auth_problem"], scope["proxy.auth_invalid"])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.keys.enabled or self.is_open(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        api_keys = _headers_named(scope, b"x-api-key")
        if api_keys:
            header = b"x-api-key"
            valid = len(api_keys) == 1 and self.keys.matches(api_keys[0])
            problem = None if valid else "the x-api-key header does not carry a valid ingress key"
            invalid = not valid
        else:
            header = b"authorization"
            problem, invalid = _check_bearer(scope, self.keys, "ingress key")
            if problem is not None and not _headers_named(scope, b"authorization"):
                problem = "this API needs an ingress key: send x-api-key: <key> or Authorization: Bearer <key>"
        if problem is not None:
            log.debug("ingress: 401 for %s %s: %s", scope["method"], scope["path"], problem)
            if self.refused is not None:
                self.refused.inc("ingress")
            await self._reject({**scope, "proxy.auth_problem": problem, "proxy.auth_invalid": invalid}, receive, send)
            return
        await self.app(_without(scope, header), receive, send)
