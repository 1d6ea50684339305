"""The proxy's error tree; each error maps to one JSON body ``{"code","error","message","source"}``.

Tree::

    ProxyError (500 internal)
    ├── BadRequest (400 bad_request)
    │   └── InvalidJson (400 invalid_json)
    ├── NotFound (404 not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── RequestTimeout (408 request_timeout)
    ├── Conflict (409 conflict)
    │   └── Fenced (409 fenced)            stale attempt token or index already taken
    ├── PayloadTooLarge (413 payload_too_large)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── NotReady (470 not_ready)           Restate's code: the invocation has no output yet
    ├── Unavailable (503 unavailable)
    └── StorageFull (507 storage_full)     the LMDB map or the disk is full
"""

from __future__ import annotations

import msgspec

__all__ = [
    "BadRequest",
    "Conflict",
    "Fenced",
    "InvalidJson",
    "MethodNotAllowed",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "ProxyError",
    "RequestTimeout",
    "StorageFull",
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


class NotReady(ProxyError):
    status, code = 470, "not_ready"


class Unavailable(ProxyError):
    status, code = 503, "unavailable"


class StorageFull(ProxyError):
    status, code = 507, "storage_full"


def error_body(status: int, code: str, message: str, source: str = "ingress") -> bytes:
    """One JSON error shape for every error the proxy sends."""
    return msgspec.json.encode({"code": status, "error": code, "message": message, "source": source})
