"""The proxy's error tree; each error maps to one JSON body ``{"code","error","message","source"}``.

Tree::

    ProxyError (500 internal)
    ├── BadRequest (400 bad_request)
    │   └── InvalidJson (400 invalid_json)
    ├── Unauthorized (401 unauthorized)    no, a malformed or a wrong admin token or ingress key
    ├── NotFound (404 not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── RequestTimeout (408 request_timeout)
    ├── Conflict (409 conflict)
    │   └── Fenced (409 fenced)            stale attempt token or index already taken
    ├── PayloadTooLarge (413 payload_too_large)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── HeadersTooLarge (431 headers_too_large)  too many request headers, or too many bytes of them
    ├── NotReady (470 not_ready)           Restate's code: the invocation has no output yet
    ├── ClientClosed (499 client_closed)   the client went away mid-request (nginx's code; nobody reads it)
    ├── Unavailable (503 unavailable)
    │   └── Overloaded (503 overloaded)    too much in flight: try again after `retry_after` seconds
    └── StorageFull (507 storage_full)     the LMDB map or the disk is full
"""

from __future__ import annotations

import msgspec

__all__ = [
    "BadRequest",
    "ClientClosed",
    "Conflict",
    "Fenced",
    "HeadersTooLarge",
    "InvalidJson",
    "MethodNotAllowed",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "ProxyError",
    "RequestTimeout",
    "StorageFull",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "error_body",
]


class ProxyError(Exception):
    """Base of every error the proxy answers with; `status` is the HTTP status."""

    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self, source: str = "ingress") -> bytes:
        """The JSON error body."""
        return error_body(self.status, self.code, self.message, source)


class BadRequest(ProxyError):
    status, code = 400, "bad_request"


class InvalidJson(BadRequest):
    code = "invalid_json"


class Unauthorized(ProxyError):
    status, code = 401, "unauthorized"


class NotFound(ProxyError):
    status, code = 404, "not_found"


class MethodNotAllowed(ProxyError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(ProxyError):
    status, code = 408, "request_timeout"


class Conflict(ProxyError):
    status, code = 409, "conflict"


class Fenced(Conflict):
    code = "fenced"


class PayloadTooLarge(ProxyError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ProxyError):
    status, code = 415, "unsupported_media_type"


class HeadersTooLarge(ProxyError):
    status, code = 431, "headers_too_large"


class NotReady(ProxyError):
    status, code = 470, "not_ready"


class ClientClosed(ProxyError):
    status, code = 499, "client_closed"


class Unavailable(ProxyError):
    status, code = 503, "unavailable"


class Overloaded(Unavailable):
    """Shed load: the answer carries ``Retry-After: {retry_after}``."""

    code = "overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageFull(ProxyError):
    status, code = 507, "storage_full"


def error_body(status: int, code: str, message: str, source: str = "ingress") -> bytes:
    """One JSON error shape for every error the proxy sends."""
    return msgspec.json.encode({"code": status, "error": code, "message": message, "source": source})
