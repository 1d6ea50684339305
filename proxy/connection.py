"""The HTTP connection of every listener: deadlines, a connection cap and JSON errors from the parser.

uvicorn's httptools protocol does most of the work; `Connection` adds what a server facing
untrusted clients needs and uvicorn leaves out:

* **Deadlines.** A connection with nothing in flight (a new one, or one between two requests) is
  closed after ``--keep-alive-timeout``, however many stray bytes that begin no request (CRLFs) it
  sends meanwhile; uvicorn arms its keep-alive timer only after a response and any byte cancels
  it. A request head must arrive whole within ``--header-timeout`` of its first byte (a trickling
  client gets a JSON 408 and is closed). Bodies have the apps' ``--body-read-timeout``.
* **A cap per listener.** Past ``--max-connections`` open connections, a new one is answered 503
  (JSON, ``Retry-After``) and closed at once, so one flooded listener cannot take the file
  descriptors the others (the step-ack callback above all) need. `connection_cap` keeps the caps
  of all listeners under the process's open-file limit.
* **JSON errors.** The parser's 400 ("Invalid HTTP request received.") is uvicorn's text/plain;
  here it is the API's JSON error shape. And it never hides an answer: bytes that fail to parse
  after a complete request (``POST ... "Ada"X\\r\\n\\r\\n``) used to close the connection with the
  400 while the request ran, its answer (and its ``x-restate-id``) lost. Now the requests already
  received get their answers first, in order, then the 400, then the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from durable_core.errors import error_body

__all__ = ["Connection", "ListenerLimits", "connection_cap", "protocol_for", "raise_fd_limit"]

log = logging.getLogger("proxy.connection")

#: Seconds between two "connection cap reached" warnings of one listener (a flood would log one per socket).
_WARN_EVERY = 10.0


@dataclass(frozen=True)
class ListenerLimits:
    """What one listener enforces on each of its connections."""

    #: The API named in error bodies and ``x-restate-error-source``: ingress, admin or callback.
    source: str
    #: Seconds from the first byte of a request head to its end.
    header_timeout: float
    #: Most open connections; the one past it is answered 503 and closed.
    max_connections: int
    #: Most bytes of one request head (request line and headers) before it is answered 431 and
    #: closed (0: no bound). Checked as the bytes arrive, so an oversized head is never buffered
    #: whole (httptools grows a long header value by concatenation: quadratic time on the loop).
    max_head_bytes: int = 0


def _error(status: int, reason: bytes, code: str, message: str, source: str, extra: bytes = b"") -> bytes:
    """A complete HTTP/1.1 error response with the JSON error body, closing the connection."""
    body = error_body(status, code, message, source)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/json\r\n",
            b"x-restate-error-source: " + source.encode("ascii") + b"\r\n",
            extra,
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class Connection(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a connection cap and JSON errors (see the module doc).

    Subclass it with `protocol_for`, which binds a listener's `ListenerLimits`.
    """

    limits: ClassVar[ListenerLimits]
    #: Monotonic time of this listener's last cap warning.
    _warned_at: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        #: Closes the connection when nothing is in flight (uvicorn's own keep-alive timer is
        #: cancelled by any byte received, so stray bytes between requests would extend it).
        self._idle_timer: asyncio.TimerHandle | None = None
        self._in_head = False
        #: Bytes of the current request head received so far (while `_in_head`).
        self._head_bytes = 0
        #: The error response to write once the answers in flight are out (then the connection closes).
        self._failure: bytes | None = None

    # -- connection -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; refuse it past the cap, else give it the idle deadline."""
        super().connection_made(transport)
        limits = self.limits
        if len(self.connections) > limits.max_connections:
            now = time.monotonic()
            if now - type(self)._warned_at >= _WARN_EVERY:
                type(self)._warned_at = now
                log.warning("%s: %d connections open, refusing more (503)", limits.source, limits.max_connections)
            message = f"too many connections to the {limits.source} listener; retry later"
            extra = self._default_headers() + b"retry-after: 1\r\n"
            self._failure = _error(503, b"Service Unavailable", "unavailable", message, limits.source, extra)
            self._flush()
            return
        # uvicorn arms the keep-alive timer only after a response: a connection that never sends
        # a byte would stay open for ever (and hold a file descriptor).
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadlines with the connection."""
        self._cancel_head_timer()
        self._cancel_idle_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse `data`, unless the connection is closing after an error; watch the head's deadline."""
        if self._failure is not None:
            return  # nothing after a bad request is read: the connection ends with the error
        super().data_received(data)
        if self._in_head and self.limits.max_head_bytes:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                message = f"request head over {self.limits.max_head_bytes} bytes"
                self._fail(431, b"Request Header Fields Too Large", "headers_too_large", message)

    # -- parser callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request head starts: from now on it has `ListenerLimits.header_timeout` to arrive."""
        super().on_message_begin()
        self._in_head = True
        self._cancel_idle_timer()
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        """The head is whole: its deadline is met."""
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """One answer is out: start the next pipelined request, or write a pending error."""
        last = not self.pipeline
        super().on_response_complete()
        if last and self._failure is not None:
            self._flush()
        elif last and not self._in_head and not self.transport.is_closing():
            self._arm_idle()

    def send_400_response(self, msg: str) -> None:
        """The parser failed (uvicorn calls this): answer a JSON 400 after the requests before it."""
        # uvicorn calls this from its `except HttpParserError`, whose message (llhttp's reason, e.g.
        # "Invalid method encountered") says more than its own constant one; it never quotes the input.
        reason = sys.exc_info()[1]
        detail = str(reason) if isinstance(reason, httptools.HttpParserError) and str(reason) else msg
        self._fail(400, b"Bad Request", "bad_request", f"invalid HTTP request: {detail.rstrip('.')}")

    # -- internals ----------------------------------------------------------------------------------

    def _default_headers(self) -> bytes:
        """uvicorn's headers of every response (``date``, ``server``), as its own 400 sends them."""
        return b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _arm_idle(self) -> None:
        self._cancel_idle_timer()
        self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_timed_out)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if not self._in_head and (self.cycle is None or self.cycle.response_complete):
            # Closed quietly, also after stray bytes (CRLFs) that began no request: an error
            # answer here could be read as the answer to the client's next request.
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            message = f"request head not received within {self.limits.header_timeout:g}s"
            self._fail(408, b"Request Timeout", "request_timeout", message)

    def _fail(self, status: int, reason: bytes, code: str, message: str) -> None:
        """End the connection with an error response, after the answers to complete requests."""
        if self._failure is not None or self.transport.is_closing():
            return
        self._failure = _error(status, reason, code, message, self.limits.source, self._default_headers())
        self._cancel_head_timer()
        self._cancel_idle_timer()
        self._unset_keepalive_if_required()
        self.flow.pause_reading()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._flush()
            return
        if cycle.more_body:
            # The newest request is incomplete: it is dropped (the apps act on whole requests only).
            queued = [entry for entry in self.pipeline if entry[0] is not cycle]
            if len(queued) == len(self.pipeline):
                # It is the one running, so nothing before it waits for an answer.
                cycle.disconnected = True
                cycle.message_event.set()
                self._flush()
                return
            self.pipeline.clear()
            self.pipeline.extend(queued)
        # Complete requests are being answered: `on_response_complete` writes the error after the last.

    def _flush(self) -> None:
        assert self._failure is not None
        if not self.transport.is_closing():
            self.transport.write(self._failure)
            self.transport.close()


#: uvicorn's methods and attributes `Connection` builds on: a uvicorn that renamed one would lose
#: a deadline or a JSON error silently, so `protocol_for` refuses to go on without them.
_UVICORN_SURFACE = (
    "send_400_response", "on_message_begin", "on_headers_complete", "on_response_complete",
    "data_received", "connection_made", "connection_lost", "_unset_keepalive_if_required",
)  # fmt: skip


def protocol_for(limits: ListenerLimits) -> type[Connection]:
    """A `Connection` class bound to one listener's limits (uvicorn's ``http=`` takes a class).

    Raises:
        RuntimeError: the installed uvicorn lacks a method `Connection` overrides or calls.
    """
    missing = [name for name in _UVICORN_SURFACE if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        raise RuntimeError(f"uvicorn {uvicorn.__version__}: HttpToolsProtocol has no {', '.join(missing)}")
    return type(f"Connection_{limits.source}", (Connection,), {"limits": limits, "_warned_at": 0.0})


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (harmless if it is already); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. an infinite hard limit the kernel caps lower
            pass
    return soft


def connection_cap(requested: int, fd_limit: int, reserved: int, listeners: int) -> int:
    """The per-listener connection cap: `requested`, lowered so that `listeners` full listeners and
    `reserved` other descriptors (the store, the handler connections, logs) fit in `fd_limit`.

    Under a small limit the reserve is at most half of it, so that the listeners keep some room.
    """
    if fd_limit == resource.RLIM_INFINITY or fd_limit <= 0:
        return requested
    room = (fd_limit - min(reserved, fd_limit // 2)) // listeners
    return max(1, min(requested, room))
