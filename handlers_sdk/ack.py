"""Posts new journal entries to the proxy's callback API and waits for the commit.

A step ack is the handler's hot path (one per ``ctx.run``), so plain ``http://`` callbacks go
through a small pooled keep-alive HTTP/1.1 client on asyncio protocols: ~10x less CPU per ack
than httpx's pool, and no contention at high concurrency. It needs nothing beyond the standard
library. ``https://`` callbacks, and tests that inject an httpx transport (``ack_transport``),
use httpx. Either way, failures to reach the proxy surface as ``httpx.TransportError``.
"""

from __future__ import annotations

import asyncio
import collections
from urllib.parse import urlsplit

import httpx

from handlers_sdk.protocol import ACK_PATH, AppendRequest, encode

__all__ = ["AckClient", "AckRejected"]

#: Delays between tries when the proxy cannot be reached; after the last the attempt is abandoned.
_RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0)
_CONNECT_TIMEOUT = 5.0
_RESPONSE_TIMEOUT = 30.0
#: Idle keep-alive connections kept per proxy address.
_MAX_IDLE = 256
#: Largest response (head + body) read from the proxy; acks answer a few dozen bytes.
_MAX_RESPONSE = 1 << 20


class AckRejected(Exception):
    """The proxy refused an append: 409 (stale attempt or index taken) or 413 (entry too large)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"append rejected with {status}: {body[:200]!r}")
        self.status = status


class _Response:
    __slots__ = ("body", "keep_alive", "status")

    def __init__(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.body = body
        self.keep_alive = keep_alive


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, answers parsed as they arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Response] | None = None
        # Parsed head of the response being read: status, body length (-1: until close), keep-alive.
        self._head: tuple[int, int, bool, bool] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _MAX_RESPONSE:
            self._fail(httpx.RemoteProtocolError("ack response too large"))
            return
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed ack response: {exc}"))

    def eof_received(self) -> bool | None:
        if self._head is not None and self._head[1] < 0:  # body delimited by the end of the connection
            self._finish(bytes(self._buffer), keep_alive=False)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head is not None and self._head[1] < 0:
            self._finish(bytes(self._buffer), keep_alive=False)
        self._fail(httpx.ReadError(f"connection to the proxy lost: {exc or 'closed by peer'}"))

    # -- requests -------------------------------------------------------------------------------

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[_Response]:
        assert self.transport is not None and self._waiter is None
        self._buffer.clear()
        self._head = None
        self._waiter = loop.create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- parsing --------------------------------------------------------------------------------

    def _parse(self) -> None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buffer[:end]).split(b"\r\n")
            del buffer[: end + 4]
            version, status_text = lines[0].split(b" ", 2)[:2]
            status = int(status_text)
            length, chunked = -1, False
            keep_alive = version == b"HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    token = value.strip().lower()
                    keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
            if status in (204, 304) or 100 <= status < 200:
                length = 0
            if chunked:
                length = -2
            elif length < 0:
                keep_alive = False
            self._head = (status, length, keep_alive, chunked)
        status, length, keep_alive, chunked = self._head
        if chunked:
            body = _dechunk(buffer)
            if body is not None:
                self._finish(body, keep_alive)
        elif length >= 0 and len(buffer) >= length:
            self._finish(bytes(buffer[:length]), keep_alive)

    def _finish(self, body: bytes, keep_alive: bool) -> None:
        assert self._head is not None
        status = self._head[0]
        self._head = None
        self._buffer.clear()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(_Response(status, body, keep_alive))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if not self.closed:
            self.close()


def _dechunk(buffer: bytearray) -> bytes | None:
    """The body of a complete chunked message in `buffer`, or None if more is needed."""
    body = bytearray()
    pos = 0
    while True:
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(bytes(buffer[pos:end]).split(b";")[0], 16)
        start = end + 2
        if size == 0:
            # The last chunk, optional trailers, then an empty line.
            return bytes(body) if buffer.find(b"\r\n\r\n", end) >= 0 else None
        if len(buffer) < start + size + 2:
            return None
        body += buffer[start : start + size]
        pos = start + size + 2


class _Pool:
    """Keep-alive connections to one ``host:port``, bound to one event loop."""

    def __init__(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.port = port
        self.loop = loop
        self.idle: collections.deque[_Connection] = collections.deque()
        host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self.prefix = (
            f"POST {ACK_PATH} HTTP/1.1\r\nHost: {host_header}\r\ncontent-type: application/json\r\ncontent-length: "
        ).encode("ascii")

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                _, conn = await self.loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to the proxy at {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to the proxy at {self.host}:{self.port}: {exc}") from None
        return conn

    async def post(self, body: bytes) -> _Response:
        data = self.prefix + str(len(body)).encode("ascii") + b"\r\n\r\n" + body
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, data)
            except httpx.ReadError:
                # The proxy closed an idle connection just as it was reused: appends are
                # idempotent, so try again on another one.
                continue
        return await self._exchange(await self._connect(), data)

    async def _exchange(self, conn: _Connection, data: bytes) -> _Response:
        waiter = conn.send(data, self.loop)
        try:
            async with asyncio.timeout(_RESPONSE_TIMEOUT):
                response = await waiter
        except TimeoutError:
            conn.close()
            raise httpx.ReadTimeout("the proxy did not answer an ack in time") from None
        except BaseException:
            conn.close()  # cancelled or failed half-way: the connection's state is unknown
            raise
        if response.keep_alive and not conn.closed and len(self.idle) < _MAX_IDLE:
            self.idle.append(conn)
        else:
            conn.close()
        return response

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class AckClient:
    """A pooled HTTP client for step acks; one per handler app, connections opened on first use.

    Args:
        transport: an httpx transport to send acks through instead (tests route them in process).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._pools: dict[str, _Pool | None] = {}

    def _get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(_RESPONSE_TIMEOUT, connect=_CONNECT_TIMEOUT),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return self._client

    def _pool(self, callback_url: str) -> _Pool | None:
        """The fast pool for a plain-HTTP callback URL (None: use httpx)."""
        if self._transport is not None:
            return None
        loop = asyncio.get_running_loop()
        pool = self._pools.get(callback_url)
        if pool is not None and pool.loop is loop:
            return pool
        if pool is None and callback_url in self._pools:
            return None  # not plain HTTP
        parts = urlsplit(callback_url)
        if parts.scheme != "http" or not parts.hostname or parts.path.strip("/"):
            self._pools[callback_url] = None
            return None
        if pool is not None:
            pool.close()  # made on another (now finished) event loop
        pool = self._pools[callback_url] = _Pool(parts.hostname, parts.port or 80, loop)
        return pool

    async def _send(self, callback_url: str, body: bytes) -> tuple[int, bytes]:
        pool = self._pool(callback_url)
        if pool is not None:
            response = await pool.post(body)
            return response.status, response.body
        reply = await self._get().post(
            callback_url + ACK_PATH, content=body, headers={"content-type": "application/json"}
        )
        return reply.status_code, reply.content

    async def append(self, callback_url: str, request: AppendRequest) -> bytes:
        """Send one entry; returns the proxy's answer (an AppendResponse) once it has committed it.

        Raises:
            AckRejected: the proxy answered 4xx; the caller decides (fence or fail the step).
            httpx.HTTPError: the proxy stayed unreachable through every retry.
        """
        body = encode(request)
        for delay in (*_RETRY_DELAYS, None):
            try:
                status, content = await self._send(callback_url, body)
            except httpx.TransportError:
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            if status == 200:
                return content
            if 400 <= status < 500:
                raise AckRejected(status, content)
            if delay is None:
                raise AckRejected(status, content)
            # 5xx (e.g. 507 storage full, 503 draining): the entry is not durable; try again.
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last try returns or raises")

    async def aclose(self) -> None:
        """Close the pools."""
        for pool in self._pools.values():
            if pool is not None:
                pool.close()
        self._pools.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
