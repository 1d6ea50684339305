"""Admission: what a request must be to get in, checked before any route reads it.

Two bounds keep one client (or many) from taking the proxy's memory or time from everyone:

* **the request head**: at most ``--max-header-count`` headers and ``--max-header-bytes`` of
  names and values together, else 431. Headers are stored with an invocation and forwarded to
  its handler on every attempt, so an unbounded head is unbounded storage and traffic.
* **load** (ingress only): at most ``--max-concurrent-requests`` requests in flight, at most
  ``--max-inflight-body-bytes`` of their bodies held at once (a call holds its input until it
  answers), and no new work while more than ``--max-write-queue`` writes wait for the writer;
  past any of them the request is answered 503 ``overloaded`` with ``Retry-After`` at once,
  before its body is read, so the requests already admitted keep their speed, the memory stays
  bounded and nothing acknowledged is at risk. Step acks and
  the admin API are never shed: they are how running invocations finish and load drains.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_core.errors import HeadersTooLarge, Overloaded, ProxyError

__all__ = ["Admission"]

#: Seconds a shed client is asked to wait: long enough to let the backlog drain, short enough
#: that a retrying client does not notice much.
_RETRY_AFTER = 1
#: Paths that always get in: a load balancer's probe must see the proxy alive while it sheds.
_ALWAYS = frozenset({"/health", "/restate/health"})


class Admission:
    """ASGI middleware that bounds request heads and, with `max_in_flight`, the load.

    Args:
        max_header_bytes: most bytes of header names and values in one request.
        max_header_count: most headers in one request.
        source: the ``source`` of the JSON errors (``ingress`` or ``admin``).
        max_in_flight: most requests in flight at once (None: no bound).
        write_backlog: how many writes wait for the writer now (None: not watched).
        max_write_queue: the backlog past which requests are shed.
        max_body_bytes: the bodies' budget: most bytes of request bodies held at once (0: none).
        body_limit: the largest body one request may have; only that much of it is counted
            (the rest of an oversized one is dropped as it is read, see `read_body`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        max_header_count: int,
        source: str,
        max_in_flight: int | None = None,
        write_backlog: Callable[[], int] | None = None,
        max_write_queue: int = 0,
        max_body_bytes: int = 0,
        body_limit: int = 0,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.source = source
        self.max_in_flight = max_in_flight
        self.write_backlog = write_backlog
        self.max_write_queue = max_write_queue
        self.max_body_bytes = max_body_bytes
        self.body_limit = body_limit
        #: Body bytes the requests in flight hold: declared ones reserved whole, chunked ones as
        #: received (each counted up to `body_limit`).
        self.body_bytes = 0
        #: Requests admitted and not finished yet.
        self.in_flight = 0
        #: Requests answered 503 since start (for tests and metrics).
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._refusal(scope)
        if error is not None:
            await _answer(send, error, self.source)
            return
        self.in_flight += 1
        # A declared body is reserved whole at admission (a burst of requests is admitted before
        # any of them has sent a byte); a chunked one counts as it arrives.
        held = min(_content_length(scope["headers"]), self.body_limit) if self.max_body_bytes else 0
        self.body_bytes += held
        received = 0

        async def counting_receive() -> Message:
            nonlocal held, received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                extra = max(0, min(received, self.body_limit) - held)
                held += extra
                self.body_bytes += extra
            return message

        try:
            await self.app(scope, counting_receive if self.max_body_bytes else receive, send)
        finally:
            self.in_flight -= 1
            self.body_bytes -= held

    def _refusal(self, scope: Scope) -> ProxyError | None:
        """Why this request may not get in, or None."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > self.max_header_count:
            return HeadersTooLarge(f"too many request headers: {len(headers)}, the limit is {self.max_header_count}")
        size = sum(len(name) + len(value) for name, value in headers)
        if size > self.max_header_bytes:
            return HeadersTooLarge(f"request headers of {size} bytes, the limit is {self.max_header_bytes}")
        if scope["path"] in _ALWAYS:
            return None
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            self.shed += 1
            return Overloaded(f"overloaded: {self.in_flight} requests in flight; retry later", _RETRY_AFTER)
        if self.max_body_bytes and self.body_bytes > 0:
            declared = min(_content_length(headers), self.body_limit)
            if self.body_bytes + declared > self.max_body_bytes:
                self.shed += 1
                message = f"overloaded: {self.body_bytes} bytes of request bodies held; retry later"
                return Overloaded(message, _RETRY_AFTER)
        if self.write_backlog is not None and self.write_backlog() > self.max_write_queue:
            self.shed += 1
            return Overloaded("overloaded: the store's writer is behind; retry later", _RETRY_AFTER)
        return None


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The declared body length (0 when absent or not a number: chunked bodies count as they come)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


async def _answer(send: Send, error: ProxyError, source: str) -> None:
    """The one JSON error shape, with ``Retry-After`` when the request was shed."""
    body = error.body(source)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-restate-error-source", source.encode()),
    ]
    if isinstance(error, Overloaded):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
