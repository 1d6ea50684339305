"""Raw-socket HTTP for tests that need exact bytes on the wire (pipelining, garbage, trickling, floods)."""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["RawResponse", "connect", "parse_responses", "read_until_closed"]


@dataclass(frozen=True)
class RawResponse:
    """One HTTP/1.1 response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


def connect(port: int, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A TCP (or TLS, with `tls`) connection to 127.0.0.1:`port`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        return tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the peer sends until it closes, and the seconds that took.

    Raises:
        AssertionError: the peer kept the connection open for `timeout` seconds.
    """
    started = time.monotonic()
    deadline = started + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"connection still open after {timeout:g}s; read so far: {b''.join(chunks)!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(chunks), time.monotonic() - started
        chunks.append(chunk)


def parse_responses(data: bytes) -> list[RawResponse]:
    """The responses in `data`, in order (each with a content-length, as the proxy sends them).

    Raises:
        AssertionError: `data` does not end on a response boundary.
    """
    responses: list[RawResponse] = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"truncated response head: {head!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        assert len(rest) >= length, f"truncated body: {rest!r}"
        responses.append(RawResponse(int(status_line.split()[1]), headers, rest[:length]))
        rest = rest[length:]
    return responses
